// Markdown of answers, rendered safely: markdown-it with raw HTML disabled (a
// <script> or <img onerror> from the model or a document is shown as text),
// then DOMPurify over the result as a second lock. Citation markers [n] become
// buttons-like links that open the source; the click is handled by the caller.
import DOMPurify from "dompurify";
import MarkdownIt from "markdown-it";

const md = new MarkdownIt({ html: false, linkify: false, breaks: true, typographer: false });

// Links from the model open in a new tab, never with the page's privileges.
const defaultLink = md.renderer.rules.link_open;
md.renderer.rules.link_open = (tokens, idx, options, env, self) => {
  tokens[idx].attrSet("target", "_blank");
  tokens[idx].attrSet("rel", "noopener noreferrer nofollow");
  return defaultLink ? defaultLink(tokens, idx, options, env, self) : self.renderToken(tokens, idx, options);
};

// [n] markers (also [1, 2] and [1][2]) as citation links.
md.inline.ruler.before("link", "citation", (state, silent) => {
  const m = /^\[(\d{1,3}(?:\s*,\s*\d{1,3})*)\]/.exec(state.src.slice(state.pos));
  if (!m) return false;
  if (!silent) {
    for (const n of m[1].split(",").map((s) => s.trim())) {
      const open = state.push("cite_open", "a", 1);
      open.attrSet("href", `#cite-${n}`);
      open.attrSet("class", "cite");
      open.attrSet("data-cite", n);
      open.attrSet("aria-label", `source ${n}`);
      const text = state.push("text", "", 0);
      text.content = `[${n}]`;
      state.push("cite_close", "a", -1);
    }
  }
  state.pos += m[0].length;
  return true;
});

/** Safe HTML for an answer's markdown. */
export function renderMarkdown(source: string): string {
  return DOMPurify.sanitize(md.render(source), {
    ALLOWED_ATTR: ["href", "class", "data-cite", "aria-label", "target", "rel", "title", "start"],
    FORBID_TAGS: ["style", "img", "iframe", "form", "input"],
  });
}
