// A tool call with side effects that waits for the user: shown as a card to
// confirm (the tool runs now, with the user's permissions) or reject.
import { useState } from "preact/hooks";
import { ApiError, api } from "./api";
import type { ToolCallInfo } from "./types";

interface Decided {
  status: string;
  result: string | null;
}

function pretty(json: string): string {
  try {
    return JSON.stringify(JSON.parse(json), null, 2);
  } catch {
    return json;
  }
}

export function PendingCall({ call }: { call: ToolCallInfo }) {
  const [decided, setDecided] = useState<Decided | null>(null);
  const [busy, setBusy] = useState(false);
  const [error, setError] = useState<string | null>(null);
  const decide = async (approve: boolean) => {
    if (!call.pending_id) return;
    setBusy(true);
    setError(null);
    try {
      setDecided(await api<Decided>("POST", `/api/tool-calls/${encodeURIComponent(call.pending_id)}`, { approve }));
    } catch (err) {
      setError(err instanceof ApiError ? err.message : String(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <section class="card pending" aria-label={`Confirm ${call.name}`}>
      <h3>The assistant wants to run {call.name}</h3>
      <p class="muted small">It has effects outside Sirocco, so it waits for you.</p>
      <pre>{pretty(call.arguments)}</pre>
      {decided ? (
        <p role="status">
          {decided.status === "rejected" ? "Rejected: nothing was run." : `Status: ${decided.status}`}
          {decided.result && <pre>{pretty(decided.result)}</pre>}
        </p>
      ) : (
        <div class="row">
          <button type="button" disabled={busy} onClick={() => decide(true)}>Confirm</button>
          <button type="button" class="ghost" disabled={busy} onClick={() => decide(false)}>Reject</button>
        </div>
      )}
      {error && <p class="error" role="alert">{error}</p>}
    </section>
  );
}
