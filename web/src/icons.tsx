// Small inline SVG icons (no icon font, no emoji: a server without emoji fonts
// would show empty boxes). Decorative: the buttons carry the accessible name.
const PATHS = {
  up: "M2 10h4v11H2zM8 21h9.2a2 2 0 0 0 2-1.6l1.6-7A2 2 0 0 0 18.8 10H14l.9-4.3A1.6 1.6 0 0 0 13.4 4a1.5 1.5 0 0 0-1.3.7L8 10z",
  down: "M2 3h4v11H2zM8 3h9.2a2 2 0 0 1 2 1.6l1.6 7a2 2 0 0 1-2 2.4H14l.9 4.3a1.6 1.6 0 0 1-1.5 1.7 1.5 1.5 0 0 1-1.3-.7L8 14z",
  edit: "M4 17.3V20h2.7l8-8-2.7-2.7zM19.7 7a1 1 0 0 0 0-1.4l-1.3-1.3a1 1 0 0 0-1.4 0l-1.3 1.3 2.7 2.7z",
  trash: "M6 7h12l-1 13H7zM9 4h6l1 2H8z",
};

export function Icon({ name }: { name: keyof typeof PATHS }) {
  return (
    <svg viewBox="0 0 24 24" width="16" height="16" aria-hidden="true" focusable="false">
      <path d={PATHS[name]} fill="currentColor" />
    </svg>
  );
}
