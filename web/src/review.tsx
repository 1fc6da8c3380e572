// Reviewers: the queue of feedback and corrections to approve or reject, and
// the export form that starts an export job and downloads its file.
import { useEffect, useState } from "preact/hooks";
import { ApiError, api, download, get } from "./api";

interface Fb {
  id: string; trace_id: string; created_at: string; thumbs: number | null; reason: string | null;
  comment: string | null; correction: string | null; review_status: string;
}

const message = (err: unknown) => (err instanceof ApiError ? err.message : String(err));

export function Review() {
  const [status, setStatus] = useState("pending");
  const [corrections, setCorrections] = useState(true);
  const [items, setItems] = useState<Fb[]>([]);
  const [error, setError] = useState<string | null>(null);
  const load = async () => {
    const q = new URLSearchParams({ review_status: status, limit: "100" });
    if (corrections) q.set("has_correction", "true");
    try {
      setItems(await get<Fb[]>(`/api/feedback?${q}`));
    } catch (err) {
      setError(message(err));
    }
  };
  useEffect(() => { load(); }, [status, corrections]);
  const review = async (f: Fb, review_status: string) => {
    try {
      await api("PATCH", `/api/feedback/${encodeURIComponent(f.id)}/review`, { review_status });
      load();
    } catch (err) {
      setError(message(err));
    }
  };
  return (
    <div class="page">
      <h1>Review queue</h1>
      <div class="filters">
        <label>Status
          <select value={status} onChange={(e) => setStatus(e.currentTarget.value)}>
            <option value="pending">Pending</option><option value="approved">Approved</option><option value="rejected">Rejected</option>
          </select>
        </label>
        <label class="check"><input type="checkbox" checked={corrections}
          onChange={(e) => setCorrections(e.currentTarget.checked)} /> Corrections only</label>
      </div>
      {error && <p class="error" role="alert">{error}</p>}
      {!items.length && <p class="muted">Nothing to review.</p>}
      <ul class="review">
        {items.map((f) => (
          <li key={f.id} class="card">
            <p>{f.thumbs === 1 ? "Thumbs up" : f.thumbs === -1 ? "Thumbs down" : ""} {f.reason ?? ""} <span class="muted small">{new Date(f.created_at).toLocaleString()} · trace {f.trace_id.slice(0, 8)}</span></p>
            {f.comment && <p>{f.comment}</p>}
            {f.correction && <blockquote class="pre">{f.correction}</blockquote>}
            {f.review_status === "pending" ? (
              <div class="row">
                <button type="button" onClick={() => review(f, "approved")}>Approve</button>
                <button type="button" class="ghost" onClick={() => review(f, "rejected")}>Reject</button>
              </div>
            ) : <span class="badge">{f.review_status}</span>}
          </li>
        ))}
      </ul>
    </div>
  );
}

interface ExportJob { id: string; created_at: string; status: string; format: string; error: string | null; manifest: Record<string, unknown> | null; }
const FORMATS = ["mistral", "openai", "openai-dpo", "trl-sft", "trl-dpo", "trl-kto", "sharegpt", "retrieval-triplets"];

export function Export() {
  const [format, setFormat] = useState("mistral");
  const [reviewedOnly, setReviewedOnly] = useState(true);
  const [consentedOnly, setConsentedOnly] = useState(true);
  const [since, setSince] = useState("");
  const [jobs, setJobs] = useState<ExportJob[]>([]);
  const [error, setError] = useState<string | null>(null);
  const load = () => get<ExportJob[]>("/api/exports?limit=20").then(setJobs).catch((e) => setError(message(e)));
  useEffect(() => { load(); }, []);
  useEffect(() => {
    if (!jobs.some((j) => ["queued", "running"].includes(j.status))) return;
    const timer = setTimeout(load, 1500);
    return () => clearTimeout(timer);
  }, [jobs]);
  const start = async (e: Event) => {
    e.preventDefault();
    setError(null);
    try {
      await api("POST", "/api/exports", { format, filters: { reviewed_only: reviewedOnly,
        consented_only: consentedOnly, since: since ? new Date(since).toISOString() : null } });
      load();
    } catch (err) {
      setError(message(err));
    }
  };
  return (
    <div class="page">
      <h1>Export training data</h1>
      <form class="card" onSubmit={start} aria-label="New export">
        <label for="format">Format</label>
        <select id="format" value={format} onChange={(e) => setFormat(e.currentTarget.value)}>
          {FORMATS.map((f) => <option key={f} value={f}>{f}</option>)}
        </select>
        <label for="since">Traces since (optional)</label>
        <input id="since" type="date" value={since} onInput={(e) => setSince(e.currentTarget.value)} />
        <label class="check"><input type="checkbox" checked={reviewedOnly} onChange={(e) => setReviewedOnly(e.currentTarget.checked)} /> Approved feedback only</label>
        <label class="check"><input type="checkbox" checked={consentedOnly} onChange={(e) => setConsentedOnly(e.currentTarget.checked)} /> Consented traces only</label>
        <button type="submit">Start export</button>
      </form>
      {error && <p class="error" role="alert">{error}</p>}
      <h2>Exports</h2>
      <ul class="exports">
        {jobs.map((j) => (
          <li key={j.id}>
            {new Date(j.created_at).toLocaleString()} · {j.format} · <span class={`badge ${j.status}`}>{j.status}</span>
            {j.error && <span class="error small"> {j.error}</span>}
            {j.status === "done" && (
              <button type="button" class="ghost" onClick={() => download(`/api/exports/${j.id}/download`, `${j.id}.zip`).catch((e) => setError(message(e)))}>
                Download
              </button>
            )}
          </li>
        ))}
      </ul>
    </div>
  );
}
