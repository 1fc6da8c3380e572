// Documents: drag-and-drop upload of many files with who may see them, a live
// view of each upload job (progress bar, per-file state and error), the
// documents the user sees, and, for admins, the sources with a sync button.
import { useEffect, useRef, useState } from "preact/hooks";
import { ApiError, api, get, upload } from "./api";
import type { DocumentStatus, Job, Me } from "./types";

const TRACKED = "sirocco.jobs";

export const STATE_WORDS: Record<string, string> = {
  queued: "waiting", running: "reading", parsed: "read, indexing", embedding: "indexing",
  done: "ready", failed: "failed", cancelled: "cancelled", skipped: "already indexed",
  duplicate: "already indexed",
};

function tracked(): string[] {
  try {
    return JSON.parse(sessionStorage.getItem(TRACKED) ?? "[]");
  } catch {
    return [];
  }
}

export function Documents({ me }: { me: Me }) {
  const [jobIds, setJobIds] = useState<string[]>(tracked());
  const [docs, setDocs] = useState<DocumentStatus[] | null>(null);
  const [error, setError] = useState<string | null>(null);
  const refreshDocs = () =>
    get<DocumentStatus[]>("/api/documents")
      .then((d) => { setDocs(d); setError(null); })
      .catch((e) => setError(e instanceof ApiError ? e.message : String(e)));
  useEffect(() => {
    refreshDocs();
  }, []);
  const track = (id: string) => {
    const next = [id, ...jobIds.filter((j) => j !== id)].slice(0, 20);
    sessionStorage.setItem(TRACKED, JSON.stringify(next));
    setJobIds(next);
  };
  return (
    <div class="page">
      <h1>Documents</h1>
      <Upload me={me} onJob={track} />
      {jobIds.length > 0 && (
        <section aria-labelledby="jobs-title">
          <h2 id="jobs-title">Your uploads</h2>
          <ul class="jobs">
            {jobIds.map((id) => <JobView key={id} id={id} onFinished={refreshDocs} />)}
          </ul>
        </section>
      )}
      {me.is_admin && <Sources onJob={track} />}
      <section aria-labelledby="docs-title">
        <div class="row">
          <h2 id="docs-title">Documents you can search</h2>
          <button type="button" class="ghost" onClick={refreshDocs}>Refresh</button>
        </div>
        {error && <p class="error" role="alert">{error}</p>}
        {docs === null ? <p class="muted">Loading…</p> : <DocumentTable docs={docs} />}
      </section>
    </div>
  );
}

function Upload({ me, onJob }: { me: Me; onJob: (id: string) => void }) {
  const [files, setFiles] = useState<File[]>([]);
  const [visibility, setVisibility] = useState(me.groups.length ? "groups" : "private");
  const [groups, setGroups] = useState<string[]>(me.groups);
  const [sent, setSent] = useState<number | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [over, setOver] = useState(false);
  const picker = useRef<HTMLInputElement>(null);

  const add = (list: FileList | null) => list && setFiles((f) => [...f, ...Array.from(list)]);
  const submit = async (e: Event) => {
    e.preventDefault();
    if (!files.length) return;
    const form = new FormData();
    files.forEach((f) => form.append("files", f, f.name));
    form.append("visibility", visibility);
    if (visibility === "groups") groups.forEach((g) => form.append("groups", g));
    setError(null);
    setSent(0);
    try {
      const r = await upload(form, setSent);
      setFiles([]);
      if (r.job_id) onJob(r.job_id);
      else setError("Nothing new to index: these files are already there.");
    } catch (err) {
      setError(err instanceof ApiError ? err.message : String(err));
    } finally {
      setSent(null);
    }
  };
  return (
    <form class="card upload" onSubmit={submit} aria-labelledby="upload-title">
      <h2 id="upload-title">Upload</h2>
      <div class={`drop${over ? " over" : ""}`}
        onDragOver={(e) => { e.preventDefault(); setOver(true); }}
        onDragLeave={() => setOver(false)}
        onDrop={(e) => { e.preventDefault(); setOver(false); add(e.dataTransfer?.files ?? null); }}>
        <p>Drop files here, or</p>
        <label for="files" class="button ghost">Choose files</label>
        <input id="files" ref={picker} type="file" multiple class="sr-only"
          onChange={(e) => { add(e.currentTarget.files); e.currentTarget.value = ""; }} />
        <p class="muted small">PDF, Word, PowerPoint, Excel, CSV, HTML, Markdown, text, e-mail, EPUB, RTF, ODT</p>
      </div>
      {files.length > 0 && (
        <ul class="files" aria-label="Files to upload">
          {files.map((f, i) => (
            <li key={`${f.name}-${i}`}>
              {f.name} <span class="muted small">({Math.ceil(f.size / 1024)} KB)</span>
              <button type="button" class="icon" aria-label={`Remove ${f.name}`}
                onClick={() => setFiles(files.filter((_, j) => j !== i))}>×</button>
            </li>
          ))}
        </ul>
      )}
      <fieldset>
        <legend>Who may see them</legend>
        <label class="check">
          <input type="radio" name="visibility" value="private" checked={visibility === "private"}
            onChange={() => setVisibility("private")} /> Only me
        </label>
        <label class="check">
          <input type="radio" name="visibility" value="groups" checked={visibility === "groups"}
            disabled={!me.groups.length} onChange={() => setVisibility("groups")} />
          My groups{me.groups.length ? "" : " (you are in none)"}
        </label>
        {visibility === "groups" && (
          <div class="groups">
            {me.groups.map((g) => (
              <label class="check" key={g}>
                <input type="checkbox" checked={groups.includes(g)}
                  onChange={(e) => setGroups(e.currentTarget.checked ? [...groups, g] : groups.filter((x) => x !== g))} />
                {g}
              </label>
            ))}
          </div>
        )}
        {me.is_admin && (
          <label class="check">
            <input type="radio" name="visibility" value="tenant" checked={visibility === "tenant"}
              onChange={() => setVisibility("tenant")} /> Everyone in {me.tenant}
          </label>
        )}
      </fieldset>
      {sent !== null && (
        <p>
          <label for="sending">Sending</label>{" "}
          <progress id="sending" max={1} value={sent} />
        </p>
      )}
      {error && <p class="error" role="alert">{error}</p>}
      <button type="submit" disabled={!files.length || sent !== null}>
        Upload {files.length ? `${files.length} file${files.length > 1 ? "s" : ""}` : ""}
      </button>
    </form>
  );
}

/** Jobs of more files than this list only their failed files: polling every
 * item of a job of thousands each second would cost the server and the page. */
const ITEM_LIST_MAX = 200;

export function JobView({ id, onFinished, admin }: { id: string; onFinished?: () => void; admin?: boolean }) {
  const [job, setJob] = useState<Job | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    let timer = 0;
    let stopped = false;
    let total: number | null = null;  // unknown until the first (item-less) answer
    const poll = async () => {
      const items = total === null ? "none" : total <= ITEM_LIST_MAX ? "all" : "failed";
      try {
        const j = await get<Job>(`/api/jobs/${encodeURIComponent(id)}?items=${items}`);
        if (stopped) return;
        const first = total === null;
        total = j.total;
        if (!first || j.total > ITEM_LIST_MAX) setJob(j);
        if (first) poll();  // now with the items this job's size allows
        else if (["queued", "running"].includes(j.state)) timer = window.setTimeout(poll, 1000);
        else onFinished?.();
      } catch (err) {
        setError(err instanceof ApiError ? err.message : String(err));
      }
    };
    poll();
    return () => { stopped = true; clearTimeout(timer); };
  }, [id]);
  if (error) return <li class="job"><p class="error">{error}</p></li>;
  if (!job) return <li class="job muted">Loading job…</li>;
  const pct = Math.round(job.progress * 100);
  return (
    <li class="job" data-testid="job" data-state={job.state}>
      <div class="row">
        <strong>{job.kind === "upload" ? "Upload" : job.kind} of {job.total} file{job.total === 1 ? "" : "s"}</strong>
        <span class={`badge ${job.state}`}>{STATE_WORDS[job.state] ?? job.state}</span>
      </div>
      <label class="sr-only" for={`p-${id}`}>Progress of job {id.slice(0, 8)}</label>
      <progress id={`p-${id}`} max={100} value={pct}>{pct}%</progress>
      <p class="small muted">
        {pct}% · {job.done} ready{job.failed ? ` · ${job.failed} failed` : ""}
        {job.skipped ? ` · ${job.skipped} already indexed` : ""}
      </p>
      {job.total > ITEM_LIST_MAX && (
        <p class="small muted">{job.failed ? "Failed files:" : "Files are listed here if they fail."}</p>
      )}
      <ul class="items">
        {job.items.map((i) => (
          <li key={i.document_id}>
            <span>{i.filename}</span> <span class={`badge ${i.state}`}>{STATE_WORDS[i.state] ?? i.state}</span>
            {i.error && <p class="error small">{plainError(i.error)}</p>}
            {admin && <span class="muted small"> {i.path}</span>}
          </li>
        ))}
      </ul>
    </li>
  );
}

/** The error without parser jargon where we know it. */
function plainError(error: string): string {
  const known: [RegExp, string][] = [
    [/encrypted/i, "The file is password-protected; upload it without a password."],
    [/empty/i, "The file has no text to index."],
    [/unsupported|no parser/i, "This file type cannot be read."],
    [/too large|limit/i, "The file is over the size limit."],
    [/corrupt|damaged|invalid/i, "The file is damaged or not what its name says."],
  ];
  const hit = known.find(([re]) => re.test(error));
  return hit ? `${hit[1]} (${error})` : error;
}

function DocumentTable({ docs }: { docs: DocumentStatus[] }) {
  if (!docs.length) return <p class="muted">No documents yet.</p>;
  return (
    <div class="table-wrap">
      <table>
        <thead><tr><th scope="col">Title</th><th scope="col">Status</th><th scope="col">Chunks</th><th scope="col">Updated</th></tr></thead>
        <tbody>
          {docs.map((d) => (
            <tr key={d.id}>
              <td>{d.title || d.id.slice(0, 8)}</td>
              <td><span class={`badge ${d.status}`}>{STATE_WORDS[d.status] ?? d.status}</span>{d.error && <span class="error small"> {d.error}</span>}</td>
              <td>{d.chunk_count}</td>
              <td>{new Date(d.updated_at).toLocaleString()}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </div>
  );
}

interface SourceRow { id: string; name: string; kind: string; path: string | null; documents: number; }

function Sources({ onJob }: { onJob: (id: string) => void }) {
  const [sources, setSources] = useState<SourceRow[]>([]);
  const [last, setLast] = useState<Record<string, Job>>({});
  const [error, setError] = useState<string | null>(null);
  const load = async () => {
    try {
      setSources(await get<SourceRow[]>("/api/sources"));
      const jobs = await get<(Job & { source_id: string | null })[]>("/api/jobs?limit=200");
      const latest: Record<string, Job> = {};
      for (const j of jobs) if (j.source_id && !latest[j.source_id]) latest[j.source_id] = j;
      setLast(latest);
    } catch (err) {
      setError(err instanceof ApiError ? err.message : String(err));
    }
  };
  useEffect(() => { load(); }, []);
  const sync = async (s: SourceRow) => {
    try {
      const job = await api<Job>("POST", `/api/sources/${encodeURIComponent(s.id)}/sync`);
      onJob(job.id);
      load();
    } catch (err) {
      setError(err instanceof ApiError ? err.message : String(err));
    }
  };
  return (
    <section aria-labelledby="sources-admin-title">
      <h2 id="sources-admin-title">Sources</h2>
      {error && <p class="error" role="alert">{error}</p>}
      <div class="table-wrap">
        <table>
          <thead><tr><th scope="col">Name</th><th scope="col">Documents</th><th scope="col">Last sync</th><th scope="col"><span class="sr-only">Actions</span></th></tr></thead>
          <tbody>
            {sources.map((s) => (
              <tr key={s.id}>
                <td>{s.name} <span class="muted small">{s.kind}</span></td>
                <td>{s.documents}</td>
                <td>{last[s.id] ? `${STATE_WORDS[last[s.id].state] ?? last[s.id].state}, ${new Date(last[s.id].created_at).toLocaleString()}` : "never"}</td>
                <td>{s.kind === "folder" && <button type="button" class="ghost" onClick={() => sync(s)}>Sync {s.name}</button>}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </section>
  );
}
