// The shell: sign-in, the signed-in user, navigation between views (hash
// routes, so the server serves one page), and the views themselves.
import { useEffect, useState } from "preact/hooks";
import { ApiError, credential, get, signIn } from "./api";
import { Chat } from "./chat";
import { Documents } from "./documents";
import { AdminJobs, Keys } from "./admin";
import { Export, Review } from "./review";
import { Traces } from "./traces";
import type { Me } from "./types";

interface View {
  path: string;
  label: string;
  allowed: (me: Me) => boolean;
}

const VIEWS: View[] = [
  { path: "chat", label: "Chat", allowed: () => true },
  { path: "documents", label: "Documents", allowed: () => true },
  { path: "traces", label: "Traces", allowed: (me) => me.is_reviewer },
  { path: "review", label: "Review", allowed: (me) => me.is_reviewer },
  { path: "export", label: "Export", allowed: (me) => me.is_reviewer },
  { path: "jobs", label: "Jobs", allowed: (me) => me.is_admin },
  { path: "keys", label: "API keys", allowed: (me) => me.is_admin },
];

function currentPath(): string {
  return location.hash.replace(/^#\/?/, "").split("/")[0] || "chat";
}

export function App() {
  const [me, setMe] = useState<Me | null>(null);
  const [checking, setChecking] = useState(credential.get() !== null);
  const [path, setPath] = useState(currentPath());

  useEffect(() => {
    const onHash = () => setPath(currentPath());
    addEventListener("hashchange", onHash);
    if (credential.get()) {
      get<Me>("/api/me")
        .then(setMe)
        .catch(() => credential.clear())
        .finally(() => setChecking(false));
    }
    return () => removeEventListener("hashchange", onHash);
  }, []);

  useEffect(() => {
    const view = VIEWS.find((v) => v.path === path);
    document.title = `${view?.label ?? "Sirocco"} · Sirocco`;
  }, [path]);

  if (checking) return <main class="center" aria-busy="true"><p>Signing in…</p></main>;
  if (!me) return <SignIn onSignedIn={setMe} />;

  const signOut = () => {
    // The key and everything else this tab kept for the user (tracked jobs).
    sessionStorage.clear();
    setMe(null);
    location.hash = "";
  };
  const views = VIEWS.filter((v) => v.allowed(me));
  const active = views.find((v) => v.path === path) ?? views[0];
  return (
    <div class="shell">
      <a class="skip" href="#main">Skip to content</a>
      <header class="top">
        <span class="brand" aria-label="Sirocco">
          <img src="/favicon.svg" alt="" width={24} height={24} /> Sirocco
        </span>
        <nav aria-label="Views">
          <ul>
            {views.map((v) => (
              <li key={v.path}>
                <a href={`#/${v.path}`} aria-current={v === active ? "page" : undefined}>
                  {v.label}
                </a>
              </li>
            ))}
          </ul>
        </nav>
        <div class="who" data-testid="who">
          <span class="user">{me.user ?? "anonymous"}</span>
          <span class="muted">
            {me.tenant}
            {me.groups.length ? ` · ${me.groups.join(", ")}` : ""}
            {me.is_admin ? " · admin" : me.is_reviewer ? " · reviewer" : ""}
          </span>
          <button type="button" class="ghost" onClick={signOut}>Sign out</button>
        </div>
      </header>
      <main id="main" tabIndex={-1}>
        {active.path === "chat" && <Chat me={me} />}
        {active.path === "documents" && <Documents me={me} />}
        {active.path === "traces" && <Traces />}
        {active.path === "review" && <Review />}
        {active.path === "export" && <Export />}
        {active.path === "jobs" && <AdminJobs />}
        {active.path === "keys" && <Keys />}
      </main>
    </div>
  );
}

function SignIn({ onSignedIn }: { onSignedIn: (me: Me) => void }) {
  const [key, setKey] = useState("");
  const [error, setError] = useState<string | null>(null);
  const [busy, setBusy] = useState(false);
  const submit = async (e: Event) => {
    e.preventDefault();
    setBusy(true);
    setError(null);
    try {
      onSignedIn(await signIn(key.trim()));
    } catch (err) {
      setError(err instanceof ApiError ? err.message : String(err));
    } finally {
      setBusy(false);
    }
  };
  return (
    <main class="center" id="main">
      <form class="card signin" onSubmit={submit} aria-labelledby="signin-title">
        <h1 id="signin-title">
          <img src="/favicon.svg" alt="" width={32} height={32} /> Sign in to Sirocco
        </h1>
        <p class="muted">
          Paste your API key. It stays in this browser tab only and is sent to this server
          in a header, never in a link.
        </p>
        <label for="key">API key</label>
        <input id="key" type="password" autoComplete="off" required placeholder="sk-sirocco-…"
          value={key} onInput={(e) => setKey(e.currentTarget.value)} />
        {error && <p class="error" role="alert">{error}</p>}
        <button type="submit" disabled={busy || !key.trim()}>{busy ? "Checking…" : "Sign in"}</button>
        <p class="muted small">No key? An admin makes one with <code>sirocco keys create</code>.</p>
      </form>
    </main>
  );
}
