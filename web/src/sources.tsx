// The sources of one answer: every citation with why it is trusted
// (supported / not supported / inferred), the opened passage with the
// supporting span highlighted, and the retrieved-but-not-cited sources.
import { useEffect, useRef, useState } from "preact/hooks";
import { ApiError, get } from "./api";
import { status, statusLabel } from "./chat";
import type { Citation, Passage, Source, Turn } from "./types";

const EXPLAIN: Record<string, string> = {
  supported: "The cited passage contains the words of the claim (a lexical check, not proof).",
  unsupported: "The claim's words are not in this passage: the citation may point at the wrong text.",
  inferred: "The model cited nothing; Sirocco attributed the answer to the top source. The highlight shows where the answer's words are in it: located, not checked.",
  unchecked: "This citation was not checked.",
};

export function SourcesPanel({ turn, n, onClose, onSelect }: {
  turn: Turn; n: number | null; onClose: () => void; onSelect: (n: number) => void;
}) {
  const heading = useRef<HTMLHeadingElement>(null);
  const cited = new Set(turn.citations.map((c) => c.n));
  const others = turn.sources.filter((s) => !cited.has(s.n));
  const chosen: Source | Citation | undefined =
    turn.citations.find((c) => c.n === n) ?? turn.sources.find((s) => s.n === n);
  useEffect(() => heading.current?.focus(), [n]);
  return (
    <aside class="sources" aria-labelledby="sources-title">
      <div class="row">
        <h2 id="sources-title" ref={heading} tabIndex={-1}>Sources</h2>
        <button type="button" class="ghost" onClick={onClose}>Close</button>
      </div>
      {turn.citations.length === 0 && <p class="muted">This answer cites no source.</p>}
      <ul class="source-list">
        {turn.citations.map((c) => (
          <li key={c.n}>
            <button type="button" class={`source ${c.n === n ? "selected" : ""}`}
              aria-expanded={c.n === n} onClick={() => onSelect(c.n)}>
              <span class="num">[{c.n}]</span>
              <span class="title">{c.title}</span>
              <span class={`badge ${status(c)}`}>{statusLabel(c)}</span>
            </button>
            {c.n === n && <Opened source={c} />}
          </li>
        ))}
      </ul>
      {others.length > 0 && (
        <details class="uncited">
          <summary>Retrieved but not cited ({others.length})</summary>
          <ul class="source-list">
            {others.map((s) => (
              <li key={s.n}>
                <button type="button" class={`source ${s.n === n ? "selected" : ""}`}
                  aria-expanded={s.n === n} onClick={() => onSelect(s.n)}>
                  <span class="num">[{s.n}]</span>
                  <span class="title">{s.title}</span>
                  <span class="muted small">score {s.score.toFixed(2)}</span>
                </button>
                {s.n === n && <Opened source={s} />}
              </li>
            ))}
          </ul>
        </details>
      )}
      {chosen === undefined && n !== null && <p class="muted">Source [{n}] is not in this answer.</p>}
    </aside>
  );
}

function Opened({ source }: { source: Source | Citation }) {
  const [passage, setPassage] = useState<Passage | null>(null);
  const [error, setError] = useState<string | null>(null);
  const citation = "inferred" in source ? (source as Citation) : null;
  useEffect(() => {
    setPassage(null);
    setError(null);
    const ids = source.chunk_ids?.length ? source.chunk_ids : [source.chunk_id];
    const query = ids.map((id) => `chunk_id=${encodeURIComponent(id)}`).join("&");
    get<Passage>(`/api/documents/${encodeURIComponent(source.doc_id)}/passage?${query}`)
      .then(setPassage)
      .catch((e) => setError(e instanceof ApiError ? e.message : String(e)));
  }, [source.doc_id, source.chunk_id]);
  const page = passage?.page ?? source.page;
  return (
    <div class="passage" data-testid="passage">
      <p class="meta">
        <strong>{passage?.title ?? source.title}</strong>
        <br />
        <span class="path">{passage?.source ?? source.source}</span>
        {page != null && <span> · page {page}</span>}
      </p>
      {citation && (
        <p class={`why ${status(citation)}`}>
          <strong>{statusLabel(citation)}</strong>
          {citation.support != null && ` (${Math.round(citation.support * 100)}% of the claim's words)`}
          {". "}
          {EXPLAIN[status(citation)]}
        </p>
      )}
      {error && <p class="error" role="alert">{error}</p>}
      {!passage && !error && <p class="muted">Loading the passage…</p>}
      {passage && <Highlighted passage={passage} spans={spansOf(passage, citation)} />}
    </div>
  );
}

/** Document offsets of the supporting spans, mapped into the passage text. */
function spansOf(passage: Passage, citation: Citation | null): [number, number][] {
  if (!citation) return [];
  const doc: [number, number][] = [];
  for (const claim of citation.claims ?? []) {
    if (claim.snippet_start != null && claim.snippet_end != null) doc.push([claim.snippet_start, claim.snippet_end]);
  }
  if (!doc.length && citation.snippet_start != null && citation.snippet_end != null) {
    doc.push([citation.snippet_start, citation.snippet_end]);
  }
  const toText = (d: number): number | null => {
    const part = passage.parts.find((p) => p.start_char <= d && d <= p.end_char);
    return part ? part.offset + d - part.start_char : null;
  };
  const spans: [number, number][] = [];
  for (const [a, b] of doc) {
    const s = toText(a);
    const e = toText(b);
    if (s != null && e != null && e > s) spans.push([s, Math.min(e, passage.text.length)]);
  }
  if (!spans.length && citation.snippet) {
    // Offsets unknown (the chunk text was not the document's exact range): find the words.
    const at = passage.text.indexOf(citation.snippet);
    if (at >= 0) spans.push([at, at + citation.snippet.length]);
  }
  return merge(spans);
}

function merge(spans: [number, number][]): [number, number][] {
  const out: [number, number][] = [];
  for (const [a, b] of [...spans].sort((x, y) => x[0] - y[0])) {
    const last = out[out.length - 1];
    if (last && a <= last[1]) last[1] = Math.max(last[1], b);
    else out.push([a, b]);
  }
  return out;
}

/** The passage as text nodes (never HTML), with <mark> around the spans. */
function Highlighted({ passage, spans }: { passage: Passage; spans: [number, number][] }) {
  const mark = useRef<HTMLElement>(null);
  useEffect(() => mark.current?.scrollIntoView({ block: "nearest" }), [passage]);
  const pieces = [];
  let at = 0;
  spans.forEach(([a, b], i) => {
    if (a > at) pieces.push(passage.text.slice(at, a));
    pieces.push(<mark key={i} ref={i === 0 ? mark : undefined}>{passage.text.slice(a, b)}</mark>);
    at = b;
  });
  pieces.push(passage.text.slice(at));
  return (
    <blockquote class="passage-text" aria-label={spans.length ? "Passage, supporting text highlighted" : "Passage"}>
      {pieces}
    </blockquote>
  );
}
