// The traces browser (admins and reviewers): filter by feedback, tool use,
// errors and date; open one to see retrieval scores, the prompt, tool calls,
// timing spans and its feedback.
import { useEffect, useRef, useState } from "preact/hooks";
import { ApiError, get } from "./api";

interface TraceRow {
  id: string; created_at: string; query: string; answer: string; status: string;
  error: string | null; latency_ms: number | null; ttft_ms: number | null; model: string | null;
}
interface Span { id: string; kind: string; name: string; started_at: string; duration_ms: number | null; status: string; }
interface Chunk { rank: number; chunk_id: string; doc_id: string; score: number; rerank_score: number | null; in_prompt: boolean; cited: boolean; text: string | null; }
interface Message { position: number; role: string; content: string; }
interface ToolCall { position: number; name: string; arguments: string; result: string | null; status: string; latency_ms: number | null; }
interface Fb { id: string; thumbs: number | null; reason: string | null; correction: string | null; review_status: string; }
interface TraceDetail extends TraceRow {
  spans: Span[]; chunks: Chunk[]; messages: Message[]; tool_calls: ToolCall[]; feedback: Fb[];
  prompt_tokens: number | null; completion_tokens: number | null;
}

export function Traces() {
  const [filters, setFilters] = useState({ thumbs: "", tools: "", status: "", since: "", until: "" });
  const [rows, setRows] = useState<TraceRow[]>([]);
  const [openId, setOpenId] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  // Only the newest request may fill the table: the first, unfiltered load can
  // finish after a filtered one that started later.
  const latest = useRef(0);
  const load = async (e?: Event) => {
    e?.preventDefault();
    const mine = ++latest.current;
    const q = new URLSearchParams({ limit: "100" });
    for (const [k, v] of Object.entries(filters)) {
      if (!v) continue;
      q.set(k, k === "since" || k === "until" ? new Date(v + (k === "until" ? "T23:59:59" : "T00:00:00")).toISOString() : v);
    }
    try {
      setError(null);
      const found = await get<TraceRow[]>(`/api/traces?${q}`);
      if (mine === latest.current) setRows(found);
    } catch (err) {
      if (mine === latest.current) setError(err instanceof ApiError ? err.message : String(err));
    }
  };
  useEffect(() => { load(); }, []);
  const set = (k: keyof typeof filters) => (e: Event) =>
    setFilters({ ...filters, [k]: (e.currentTarget as HTMLInputElement).value });
  return (
    <div class="page">
      <h1>Traces</h1>
      <form class="filters" onSubmit={load} aria-label="Filter traces">
        <label>Feedback
          <select value={filters.thumbs} onChange={set("thumbs")}>
            <option value="">Any</option><option value="1">Thumbs up</option><option value="-1">Thumbs down</option>
          </select>
        </label>
        <label>Tools
          <select value={filters.tools} onChange={set("tools")}>
            <option value="">Any</option><option value="true">Used tools</option><option value="false">No tools</option>
          </select>
        </label>
        <label>Status
          <select value={filters.status} onChange={set("status")}>
            <option value="">Any</option><option value="ok">OK</option><option value="error">Errors</option>
          </select>
        </label>
        <label>From <input type="date" value={filters.since} onInput={set("since")} /></label>
        <label>To <input type="date" value={filters.until} onInput={set("until")} /></label>
        <button type="submit">Filter</button>
      </form>
      {error && <p class="error" role="alert">{error}</p>}
      <div class="table-wrap">
        <table data-testid="traces">
          <thead><tr><th scope="col">When</th><th scope="col">Question</th><th scope="col">Status</th><th scope="col">Latency</th></tr></thead>
          <tbody>
            {rows.map((t) => (
              <tr key={t.id} class={t.id === openId ? "selected" : ""}>
                <td>{new Date(t.created_at).toLocaleString()}</td>
                <td><button type="button" class="link" onClick={() => setOpenId(t.id)}>{t.query || "(empty)"}</button></td>
                <td><span class={`badge ${t.status}`}>{t.status}</span></td>
                <td>{t.latency_ms != null ? `${t.latency_ms} ms` : ""}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {!rows.length && !error && <p class="muted">No traces match.</p>}
      {openId && <TraceView id={openId} onClose={() => setOpenId(null)} />}
    </div>
  );
}

function TraceView({ id, onClose }: { id: string; onClose: () => void }) {
  const [t, setT] = useState<TraceDetail | null>(null);
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    setT(null);
    get<TraceDetail>(`/api/traces/${encodeURIComponent(id)}`).then(setT)
      .catch((err) => setError(err instanceof ApiError ? err.message : String(err)));
  }, [id]);
  if (error) return <p class="error" role="alert">{error}</p>;
  if (!t) return <p class="muted">Loading trace…</p>;
  const total = Math.max(1, ...t.spans.map((s) => s.duration_ms ?? 0));
  return (
    <section class="card trace" aria-labelledby="trace-title" data-testid="trace">
      <div class="row">
        <h2 id="trace-title">Trace {t.id.slice(0, 8)}</h2>
        <button type="button" class="ghost" onClick={onClose}>Close</button>
      </div>
      <dl class="facts">
        <dt>Question</dt><dd>{t.query}</dd>
        <dt>Answer</dt><dd class="pre">{t.answer}</dd>
        <dt>Model</dt><dd>{t.model} · {t.prompt_tokens ?? "?"} + {t.completion_tokens ?? "?"} tokens · first token {t.ttft_ms ?? "?"} ms · total {t.latency_ms ?? "?"} ms</dd>
        {t.error && <><dt>Error</dt><dd class="error">{t.error}</dd></>}
      </dl>
      <h3>Feedback</h3>
      {t.feedback.length ? (
        <ul>{t.feedback.map((f) => (
          <li key={f.id}>{f.thumbs === 1 ? "Thumbs up" : f.thumbs === -1 ? "Thumbs down" : ""} {f.reason} <span class="badge">{f.review_status}</span>
            {f.correction && <blockquote class="pre">Correction: {f.correction}</blockquote>}</li>
        ))}</ul>
      ) : <p class="muted">None.</p>}
      <h3>Retrieval</h3>
      <div class="table-wrap">
        <table>
          <thead><tr><th scope="col">Rank</th><th scope="col">Score</th><th scope="col">Rerank</th><th scope="col">In prompt</th><th scope="col">Cited</th><th scope="col">Text</th></tr></thead>
          <tbody>{t.chunks.map((c) => (
            <tr key={c.chunk_id}><td>{c.rank}</td><td>{c.score.toFixed(3)}</td><td>{c.rerank_score?.toFixed(3) ?? ""}</td>
              <td>{c.in_prompt ? "yes" : "no"}</td><td>{c.cited ? "yes" : "no"}</td><td class="small">{(c.text ?? "").slice(0, 160)}</td></tr>
          ))}</tbody>
        </table>
      </div>
      <h3>Timing</h3>
      <ul class="spans">{t.spans.map((s) => (
        <li key={s.id}>
          <span class="span-name">{s.kind}: {s.name}</span>
          <meter min={0} max={total} value={s.duration_ms ?? 0} aria-label={`${s.name} duration`} />
          <span class="small">{s.duration_ms ?? "?"} ms {s.status !== "ok" ? `(${s.status})` : ""}</span>
        </li>
      ))}</ul>
      {t.tool_calls.length > 0 && (<>
        <h3>Tool calls</h3>
        <ul>{t.tool_calls.map((c) => (
          <li key={c.position}><strong>{c.name}</strong> ({c.status}, {c.latency_ms ?? "?"} ms)
            <pre>{c.arguments}</pre>{c.result && <pre>{c.result.slice(0, 2000)}</pre>}</li>
        ))}</ul>
      </>)}
      <details>
        <summary>Prompt ({t.messages.length} messages)</summary>
        {t.messages.map((m) => (
          <div key={m.position} class="message"><strong>{m.role}</strong><pre>{m.content}</pre></div>
        ))}
      </details>
    </section>
  );
}
