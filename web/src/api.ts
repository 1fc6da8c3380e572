// The public API, as the UI calls it. The key lives in sessionStorage (gone
// when the tab closes) and travels only in the Authorization header, never in
// a URL. Signing in is "whatever credential makes /api/me answer": an OIDC
// login would store a token the same way and keep every call below unchanged.
import type { AnswerEvent, Me } from "./types";

const KEY = "sirocco.key";

export class ApiError extends Error {
  constructor(message: string, readonly status: number, readonly code: string) {
    super(message);
  }
}

export const credential = {
  get: (): string | null => sessionStorage.getItem(KEY),
  set: (key: string) => sessionStorage.setItem(KEY, key),
  clear: () => sessionStorage.removeItem(KEY),
};

function headers(extra: Record<string, string> = {}): Record<string, string> {
  const key = credential.get();
  return key ? { Authorization: `Bearer ${key}`, ...extra } : extra;
}

async function failure(r: Response): Promise<ApiError> {
  let message = `${r.status} ${r.statusText}`;
  let code = "http_error";
  try {
    const body = await r.json();
    if (body?.error?.message) {
      message = body.error.message;
      code = body.error.code ?? code;
    } else if (Array.isArray(body?.detail)) {
      message = body.detail.map((d: { msg: string }) => d.msg).join("; ");
    }
  } catch {
    /* not JSON: keep the status line */
  }
  if (r.status === 429) {
    const wait = r.headers.get("Retry-After");
    if (wait) message += ` (try again in ${wait} s)`;
  }
  return new ApiError(message, r.status, code);
}

/** A JSON request; throws ApiError with the server's message. */
export async function api<T>(method: string, path: string, body?: unknown): Promise<T> {
  const init: RequestInit = { method, headers: headers() };
  if (body instanceof FormData) {
    init.body = body;
  } else if (body !== undefined) {
    init.body = JSON.stringify(body);
    init.headers = headers({ "Content-Type": "application/json" });
  }
  const r = await fetch(path, init);
  if (!r.ok) throw await failure(r);
  if (r.status === 204) return undefined as T;
  return (await r.json()) as T;
}

export const get = <T>(path: string) => api<T>("GET", path);

/** Check a key and return who it belongs to (without keeping it on failure). */
export async function signIn(key: string): Promise<Me> {
  credential.set(key);
  try {
    return await get<Me>("/api/me");
  } catch (e) {
    credential.clear();
    throw e;
  }
}

/** POST /api/chat and hand each server-sent event to onEvent until [DONE]. */
export async function streamChat(
  body: Record<string, unknown>,
  onEvent: (e: AnswerEvent) => void,
  signal: AbortSignal,
): Promise<void> {
  const r = await fetch("/api/chat", {
    method: "POST",
    headers: headers({ "Content-Type": "application/json", Accept: "text/event-stream" }),
    body: JSON.stringify({ ...body, stream: true }),
    signal,
  });
  if (!r.ok || !r.body) throw await failure(r);
  const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end: number;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const data = frame
        .split("\n")
        .filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).trimStart())
        .join("\n");
      if (data === "[DONE]") return;
      if (data) onEvent(JSON.parse(data) as AnswerEvent);
    }
  }
}

/** Download a file the API serves behind the key (an export), as the browser would. */
export async function download(path: string, filename: string): Promise<void> {
  const r = await fetch(path, { headers: headers() });
  if (!r.ok) throw await failure(r);
  const url = URL.createObjectURL(await r.blob());
  const a = document.createElement("a");
  a.href = url;
  a.download = filename;
  document.body.append(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
}

/** Upload files with progress of the bytes sent (fetch cannot report it). */
export function upload(
  form: FormData,
  onProgress: (share: number) => void,
): Promise<{ documents: { id: string; filename: string; status: string }[]; job_id: string | null }> {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open("POST", "/api/documents");
    const key = credential.get();
    if (key) xhr.setRequestHeader("Authorization", `Bearer ${key}`);
    xhr.upload.onprogress = (e) => e.lengthComputable && onProgress(e.loaded / e.total);
    xhr.onerror = () => reject(new ApiError("the upload failed: network error", 0, "network"));
    xhr.onload = () => {
      let body: any = null;
      try {
        body = JSON.parse(xhr.responseText);
      } catch {
        /* keep null */
      }
      if (xhr.status >= 200 && xhr.status < 300) resolve(body);
      else
        reject(
          new ApiError(body?.error?.message ?? `upload failed (${xhr.status})`, xhr.status,
            body?.error?.code ?? "http_error"),
        );
    };
    xhr.send(form);
  });
}
