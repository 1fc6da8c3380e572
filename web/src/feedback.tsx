// Thumbs up/down on an answer, with an optional reason, and "correct this
// answer": the text as it should have been, stored as a correction on the trace.
import { useState } from "preact/hooks";
import { ApiError, api } from "./api";
import { Icon } from "./icons";

const REASONS = ["Wrong", "Not in the sources", "Incomplete", "Wrong source cited", "Other"];

export function Feedback({ traceId, answer }: { traceId: string; answer: string }) {
  const [thumbs, setThumbs] = useState<1 | -1 | null>(null);
  const [open, setOpen] = useState(false);
  const [reason, setReason] = useState("");
  const [correcting, setCorrecting] = useState(false);
  const [correction, setCorrection] = useState(answer);
  const [saved, setSaved] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);

  const send = async (body: Record<string, unknown>, note: string) => {
    setError(null);
    try {
      await api("POST", `/api/traces/${encodeURIComponent(traceId)}/feedback`, body);
      setSaved(note);
      return true;
    } catch (err) {
      setError(err instanceof ApiError ? err.message : String(err));
      return false;
    }
  };
  const up = async () => {
    setThumbs(1);
    setOpen(false);
    await send({ thumbs: 1 }, "Thanks, noted as helpful.");
  };
  const down = () => {
    setThumbs(-1);
    setOpen(true);
    setSaved(null);
  };
  const submit = async (e: Event) => {
    e.preventDefault();
    const body: Record<string, unknown> = { thumbs: -1, reason: reason || null };
    if (correcting && correction.trim() && correction !== answer) body.correction = correction;
    if (await send(body, body.correction ? "Thanks: your correction goes to the reviewers." : "Thanks, noted.")) {
      setOpen(false);
    }
  };
  const id = traceId.slice(0, 8);
  return (
    <div class="feedback">
      <button type="button" class="ghost" aria-pressed={thumbs === 1} aria-label="Helpful"
        title="Helpful" onClick={up}><Icon name="up" /></button>
      <button type="button" class="ghost" aria-pressed={thumbs === -1} aria-label="Not helpful"
        title="Not helpful" onClick={down}><Icon name="down" /></button>
      {saved && <span class="ok small" role="status">{saved}</span>}
      {error && <span class="error small" role="alert">{error}</span>}
      {open && (
        <form class="feedback-form" onSubmit={submit} aria-label="What was wrong">
          <label for={`reason-${id}`}>What was wrong? (optional)</label>
          <select id={`reason-${id}`} value={reason} onChange={(e) => setReason(e.currentTarget.value)}>
            <option value="">Choose a reason…</option>
            {REASONS.map((r) => <option key={r} value={r}>{r}</option>)}
          </select>
          <label class="check">
            <input type="checkbox" checked={correcting}
              onChange={(e) => setCorrecting(e.currentTarget.checked)} />
            Correct this answer
          </label>
          {correcting && (
            <>
              <label for={`correction-${id}`}>The answer as it should be</label>
              <textarea id={`correction-${id}`} rows={5} value={correction}
                onInput={(e) => setCorrection(e.currentTarget.value)} />
            </>
          )}
          <div class="row">
            <button type="submit">Send feedback</button>
            <button type="button" class="ghost" onClick={() => setOpen(false)}>Cancel</button>
          </div>
        </form>
      )}
    </div>
  );
}
