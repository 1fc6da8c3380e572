// Chat: conversations on the left, the answer stream in the middle, the
// sources of the selected answer on the right. Enter sends, Shift+Enter adds a
// line; Stop aborts the request (the server then stops generating).
import { useEffect, useRef, useState } from "preact/hooks";
import { ApiError, api, get, streamChat } from "./api";
import { Feedback } from "./feedback";
import { Icon } from "./icons";
import { renderMarkdown } from "./markdown";
import { PendingCall } from "./pending";
import { SourcesPanel } from "./sources";
import type { AnswerEvent, Citation, ConversationSummary, Me, Turn } from "./types";

interface Selection {
  turn: number;
  n: number | null;
}

function newTurn(question: string): Turn {
  return { question, answer: "", citations: [], sources: [], traceId: null, pending: [],
    tools: [], error: null, streaming: true };
}

export function Chat({ me }: { me: Me }) {
  const [conversations, setConversations] = useState<ConversationSummary[]>([]);
  const [convId, setConvId] = useState<string | null>(null);
  const [turns, setTurns] = useState<Turn[]>([]);
  const [question, setQuestion] = useState("");
  const [selected, setSelected] = useState<Selection | null>(null);
  const [error, setError] = useState<string | null>(null);
  const [showList, setShowList] = useState(false);
  const abort = useRef<AbortController | null>(null);
  const input = useRef<HTMLTextAreaElement>(null);
  const streaming = turns.some((t) => t.streaming);

  const refresh = () =>
    get<ConversationSummary[]>("/api/conversations").then(setConversations).catch(() => {});
  useEffect(() => {
    refresh();
    input.current?.focus();
  }, []);

  const patch = (index: number, update: (t: Turn) => Partial<Turn>) =>
    setTurns((ts) => ts.map((t, i) => (i === index ? { ...t, ...update(t) } : t)));

  const ask = async (text: string, index: number, conversation: string | null) => {
    const controller = new AbortController();
    abort.current = controller;
    const onEvent = (e: AnswerEvent) => {
      if (e.type === "delta") patch(index, (t) => ({ answer: t.answer + (e.text ?? "") }));
      else if (e.type === "tool_result") patch(index, (t) => ({ tools: [...t.tools, ...(e.tool_calls ?? [])] }));
      else if (e.type === "tool_pending") patch(index, (t) => ({ pending: [...t.pending, ...(e.tool_calls ?? [])], traceId: e.trace_id ?? t.traceId }));
      else if (e.type === "error") patch(index, (t) => ({ error: e.message ?? "the answer failed", traceId: e.trace_id ?? t.traceId }));
      else if (e.type === "done") {
        patch(index, () => ({ citations: e.citations ?? [], sources: e.sources ?? [], traceId: e.trace_id ?? null }));
        if (e.conversation_id) setConvId(e.conversation_id);
        if ((e.citations ?? []).length) setSelected({ turn: index, n: null });
      }
    };
    try {
      await streamChat({ question: text, conversation_id: conversation ?? undefined }, onEvent,
        controller.signal);
    } catch (err) {
      if (controller.signal.aborted) patch(index, () => ({ stopped: true }));
      else patch(index, () => ({ error: err instanceof ApiError ? err.message : String(err) }));
    } finally {
      patch(index, () => ({ streaming: false }));
      abort.current = null;
      refresh();
    }
  };

  const send = (e?: Event) => {
    e?.preventDefault();
    const text = question.trim();
    if (!text || streaming) return;
    setQuestion("");
    setError(null);
    const index = turns.length;
    setTurns((ts) => [...ts, newTurn(text)]);
    ask(text, index, convId);
  };

  const regenerate = () => {
    const index = turns.length - 1;
    if (index < 0 || streaming) return;
    const text = turns[index].question;
    setTurns((ts) => [...ts.slice(0, index), newTurn(text)]);
    if (selected?.turn === index) setSelected(null);
    ask(text, index, convId);
  };

  const open = async (id: string) => {
    abort.current?.abort();
    setShowList(false);
    try {
      const detail = await get<{ id: string; turns: { question: string; answer: string; citations: Citation[]; trace_id: string | null }[] }>(
        `/api/conversations/${encodeURIComponent(id)}`);
      setConvId(detail.id);
      setTurns(detail.turns.map((t) => ({ ...newTurn(t.question), answer: t.answer,
        citations: t.citations, traceId: t.trace_id, streaming: false })));
      setSelected(null);
    } catch (err) {
      setError(err instanceof ApiError ? err.message : String(err));
    }
  };

  const startNew = () => {
    abort.current?.abort();
    setConvId(null);
    setTurns([]);
    setSelected(null);
    setShowList(false);
    input.current?.focus();
  };

  const onKey = (e: KeyboardEvent) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) send(e);
  };

  const onAnswerClick = (index: number) => (e: MouseEvent) => {
    const link = (e.target as HTMLElement).closest("a[data-cite]");
    if (!link) return;
    e.preventDefault();
    setSelected({ turn: index, n: Number(link.getAttribute("data-cite")) });
  };

  const current = selected ? turns[selected.turn] : undefined;
  return (
    <div class={`chat${current ? " with-sources" : ""}`}>
      <aside class={`conversations${showList ? " open" : ""}`} aria-label="Conversations">
        <div class="row">
          <h2>Conversations</h2>
          <button type="button" onClick={startNew}>New chat</button>
        </div>
        <ConversationList items={conversations} active={convId} onOpen={open}
          onChanged={(deleted) => { refresh(); if (deleted === convId) startNew(); }} />
      </aside>
      <section class="thread" aria-label="Chat">
        <div class="row mobile-only">
          <button type="button" class="ghost" aria-expanded={showList}
            onClick={() => setShowList(!showList)}>Conversations</button>
          <button type="button" class="ghost" onClick={startNew}>New chat</button>
        </div>
        {error && <p class="error" role="alert">{error}</p>}
        <ol class="turns" aria-live="polite" aria-busy={streaming}>
          {turns.length === 0 && (
            <li class="empty">
              <h1>Ask about your documents</h1>
              <p class="muted">
                Signed in as {me.user} ({me.tenant}). Answers cite the passages they rely on;
                open a citation to see the exact text and whether it supports the claim.
              </p>
            </li>
          )}
          {turns.map((t, i) => (
            <li key={i} class="turn">
              <div class="question"><span class="sr-only">You asked: </span>{t.question}</div>
              <article class="answer" aria-label={`Answer ${i + 1}`} data-testid="answer">
                <div class="md" onClick={onAnswerClick(i)}
                  dangerouslySetInnerHTML={{ __html: renderMarkdown(t.answer) }} />
                {t.streaming && !t.answer && <p class="muted">Searching your documents…</p>}
                {t.stopped && <p class="muted">Stopped.</p>}
                {t.error && <p class="error" role="alert">{t.error}</p>}
                {t.tools.map((c) => <p key={c.id} class="muted small">Used {c.name}{c.is_error ? " (failed)" : ""}</p>)}
                {t.pending.map((c) => <PendingCall key={c.id} call={c} />)}
                {t.citations.length > 0 && (
                  <p class="chips" aria-label="Citations">
                    {t.citations.map((c) => (
                      <button type="button" key={c.n} class={`chip ${status(c)}`}
                        aria-label={`Open source ${c.n}: ${c.title} (${statusLabel(c)})`}
                        onClick={() => setSelected({ turn: i, n: c.n })}>
                        [{c.n}] {c.title}
                      </button>
                    ))}
                  </p>
                )}
                {!t.streaming && (
                  <div class="actions">
                    <CopyButton text={t.answer} />
                    {i === turns.length - 1 && (
                      <button type="button" class="ghost" onClick={regenerate}>Regenerate</button>
                    )}
                    {(t.citations.length > 0 || t.sources.length > 0) && (
                      <button type="button" class="ghost" onClick={() => setSelected({ turn: i, n: null })}>
                        Sources
                      </button>
                    )}
                    {t.traceId && <Feedback traceId={t.traceId} answer={t.answer} />}
                  </div>
                )}
              </article>
            </li>
          ))}
        </ol>
        <form class="composer" onSubmit={send}>
          <label for="question" class="sr-only">Your question</label>
          <textarea id="question" ref={input} rows={2} value={question} maxLength={8000}
            placeholder="Ask a question (Enter sends, Shift+Enter for a new line)"
            onInput={(e) => setQuestion(e.currentTarget.value)} onKeyDown={onKey} />
          {streaming ? (
            <button type="button" class="stop" onClick={() => abort.current?.abort()}>Stop</button>
          ) : (
            <button type="submit" disabled={!question.trim()}>Send</button>
          )}
        </form>
      </section>
      {current && (
        <SourcesPanel turn={current} n={selected!.n} onClose={() => setSelected(null)}
          onSelect={(n) => setSelected({ turn: selected!.turn, n })} />
      )}
    </div>
  );
}

export function status(c: Citation): string {
  if (c.inferred) return "inferred";
  if (c.supported === false) return "unsupported";
  return c.supported ? "supported" : "unchecked";
}

export function statusLabel(c: Citation): string {
  return { inferred: "inferred", unsupported: "not supported", supported: "supported",
    unchecked: "not checked" }[status(c)]!;
}

function CopyButton({ text }: { text: string }) {
  const [done, setDone] = useState(false);
  const copy = async () => {
    try {
      await navigator.clipboard.writeText(text);
    } catch {
      const area = document.createElement("textarea");
      area.value = text;
      document.body.append(area);
      area.select();
      document.execCommand("copy");
      area.remove();
    }
    setDone(true);
    setTimeout(() => setDone(false), 1500);
  };
  return <button type="button" class="ghost" onClick={copy}>{done ? "Copied" : "Copy"}</button>;
}

function ConversationList({ items, active, onOpen, onChanged }: {
  items: ConversationSummary[]; active: string | null; onOpen: (id: string) => void;
  onChanged: (deleted?: string) => void;
}) {
  const [editing, setEditing] = useState<string | null>(null);
  const [title, setTitle] = useState("");
  const [error, setError] = useState<string | null>(null);
  const rename = async (e: Event, id: string) => {
    e.preventDefault();
    try {
      await api("PATCH", `/api/conversations/${encodeURIComponent(id)}`, { title });
      setEditing(null);
      onChanged();
    } catch (err) {
      setError(err instanceof ApiError ? err.message : String(err));
    }
  };
  const remove = async (c: ConversationSummary) => {
    if (!confirm(`Delete the conversation "${c.title}"?`)) return;
    await api("DELETE", `/api/conversations/${encodeURIComponent(c.id)}`);
    onChanged(c.id);
  };
  if (!items.length) return <p class="muted small">No conversations yet.</p>;
  return (
    <>
      {error && <p class="error" role="alert">{error}</p>}
      <ul class="conv-list">
        {items.map((c) =>
          editing === c.id ? (
            <li key={c.id}>
              <form class="rename" onSubmit={(e) => rename(e, c.id)}>
                <label for={`title-${c.id}`} class="sr-only">New title</label>
                <input id={`title-${c.id}`} value={title} maxLength={120} autoFocus
                  onInput={(e) => setTitle(e.currentTarget.value)}
                  onKeyDown={(e) => e.key === "Escape" && setEditing(null)} />
                <button type="submit">Save</button>
              </form>
            </li>
          ) : (
            <li key={c.id} class={c.id === active ? "active" : ""}>
              <button type="button" class="link" aria-current={c.id === active ? "true" : undefined}
                onClick={() => onOpen(c.id)}>{c.title || "Untitled"}</button>
              <button type="button" class="icon" aria-label={`Rename ${c.title}`}
                onClick={() => { setEditing(c.id); setTitle(c.title); setError(null); }}><Icon name="edit" /></button>
              <button type="button" class="icon" aria-label={`Delete ${c.title}`}
                onClick={() => remove(c)}><Icon name="trash" /></button>
            </li>
          ),
        )}
      </ul>
    </>
  );
}
