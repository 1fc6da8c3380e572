// Admin views: the tenant's jobs (cancel, retry) and its API keys.
import { useEffect, useState } from "preact/hooks";
import { ApiError, api, get } from "./api";
import { JobView, STATE_WORDS } from "./documents";
import type { Job } from "./types";

const message = (err: unknown) => (err instanceof ApiError ? err.message : String(err));

export function AdminJobs() {
  const [jobs, setJobs] = useState<Job[]>([]);
  const [open, setOpen] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const load = () => get<Job[]>("/api/jobs?limit=100").then(setJobs).catch((e) => setError(message(e)));
  useEffect(() => { load(); }, []);
  const act = async (id: string, verb: "cancel" | "retry") => {
    try {
      await api("POST", `/api/jobs/${id}/${verb}`);
      load();
    } catch (err) {
      setError(message(err));
    }
  };
  return (
    <div class="page">
      <div class="row"><h1>Jobs</h1><button type="button" class="ghost" onClick={load}>Refresh</button></div>
      {error && <p class="error" role="alert">{error}</p>}
      <div class="table-wrap">
        <table>
          <thead><tr><th scope="col">Created</th><th scope="col">Kind</th><th scope="col">By</th><th scope="col">State</th><th scope="col">Progress</th><th scope="col"><span class="sr-only">Actions</span></th></tr></thead>
          <tbody>
            {jobs.map((j) => (
              <tr key={j.id}>
                <td>{new Date(j.created_at).toLocaleString()}</td>
                <td>{j.kind}</td>
                <td>{j.created_by ?? ""}</td>
                <td><span class={`badge ${j.state}`}>{STATE_WORDS[j.state] ?? j.state}</span></td>
                <td><progress max={100} value={Math.round(j.progress * 100)} aria-label={`Progress of ${j.kind} job`} /> {j.done}/{j.total}{j.failed ? `, ${j.failed} failed` : ""}</td>
                <td class="actions">
                  <button type="button" class="ghost" onClick={() => setOpen(open === j.id ? null : j.id)}>{open === j.id ? "Hide" : "Files"}</button>
                  {["queued", "running"].includes(j.state) && <button type="button" class="ghost" onClick={() => act(j.id, "cancel")}>Cancel</button>}
                  {j.failed > 0 && <button type="button" class="ghost" onClick={() => act(j.id, "retry")}>Retry failed</button>}
                </td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
      {open && <ul class="jobs"><JobView id={open} admin /></ul>}
    </div>
  );
}

interface Key { id: string; prefix: string; user: string; groups: string[]; is_admin: boolean; name: string | null; created_at: string; revoked_at: string | null; }

export function Keys() {
  const [keys, setKeys] = useState<Key[]>([]);
  const [form, setForm] = useState({ user: "", groups: "", name: "", admin: false });
  const [created, setCreated] = useState<string | null>(null);
  const [error, setError] = useState<string | null>(null);
  const load = () => get<Key[]>("/api/keys").then(setKeys).catch((e) => setError(message(e)));
  useEffect(() => { load(); }, []);
  const create = async (e: Event) => {
    e.preventDefault();
    setError(null);
    try {
      const groups = form.groups.split(",").map((g) => g.trim()).filter(Boolean);
      const r = await api<{ key: string }>("POST", "/api/keys", { user: form.user.trim(),
        groups: groups.length ? groups : null, admin: form.admin, name: form.name || null });
      setCreated(r.key);
      setForm({ user: "", groups: "", name: "", admin: false });
      load();
    } catch (err) {
      setError(message(err));
    }
  };
  const revoke = async (k: Key) => {
    if (!confirm(`Revoke ${k.prefix}… of ${k.user}? Requests with it fail from now on.`)) return;
    await api("DELETE", `/api/keys/${k.id}`).catch((e) => setError(message(e)));
    load();
  };
  return (
    <div class="page">
      <h1>API keys</h1>
      <form class="card" onSubmit={create} aria-label="New API key">
        <label for="k-user">User</label>
        <input id="k-user" required value={form.user} onInput={(e) => setForm({ ...form, user: e.currentTarget.value })} />
        <label for="k-groups">Groups (comma-separated)</label>
        <input id="k-groups" value={form.groups} onInput={(e) => setForm({ ...form, groups: e.currentTarget.value })} />
        <label for="k-name">Label (optional)</label>
        <input id="k-name" value={form.name} onInput={(e) => setForm({ ...form, name: e.currentTarget.value })} />
        <label class="check"><input type="checkbox" checked={form.admin} onChange={(e) => setForm({ ...form, admin: e.currentTarget.checked })} /> Admin</label>
        <button type="submit">Create key</button>
      </form>
      {created && (
        <p class="card" role="status">New key, shown only this once: <code class="key">{created}</code></p>
      )}
      {error && <p class="error" role="alert">{error}</p>}
      <div class="table-wrap">
        <table>
          <thead><tr><th scope="col">Key</th><th scope="col">User</th><th scope="col">Groups</th><th scope="col">Role</th><th scope="col">Created</th><th scope="col"><span class="sr-only">Actions</span></th></tr></thead>
          <tbody>
            {keys.map((k) => (
              <tr key={k.id}>
                <td><code>{k.prefix}…</code> {k.name && <span class="muted small">{k.name}</span>}</td>
                <td>{k.user}</td>
                <td>{k.groups.join(", ")}</td>
                <td>{k.is_admin ? "admin" : "user"}</td>
                <td>{new Date(k.created_at).toLocaleDateString()}</td>
                <td>{k.revoked_at ? <span class="muted">revoked</span> : <button type="button" class="ghost" onClick={() => revoke(k)}>Revoke</button>}</td>
              </tr>
            ))}
          </tbody>
        </table>
      </div>
    </div>
  );
}
