/** The widget's stylesheet; every colour and size is a CSS variable. */
export const STYLE = `
.chatup {
  --chatup-bg: #ffffff;
  --chatup-fg: #1d2330;
  --chatup-muted: #6b7385;
  --chatup-accent: #4f46e5;
  --chatup-accent-fg: #ffffff;
  --chatup-border: #e3e6ee;
  --chatup-bubble: #f4f5f9;
  --chatup-error: #b42318;
  --chatup-error-bg: #fef3f2;
  --chatup-radius: 12px;
  --chatup-font: system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif;
  --chatup-font-size: 14px;
  display: flex;
  flex-direction: column;
  box-sizing: border-box;
  height: 100%;
  min-height: 320px;
  background: var(--chatup-bg);
  color: var(--chatup-fg);
  font-family: var(--chatup-font);
  font-size: var(--chatup-font-size);
  border: 1px solid var(--chatup-border);
  border-radius: var(--chatup-radius);
  overflow: hidden;
}
.chatup *, .chatup *::before, .chatup *::after { box-sizing: inherit; }
.chatup-header {
  display: flex; align-items: center; gap: 10px;
  padding: 12px 16px; border-bottom: 1px solid var(--chatup-border);
}
.chatup-title { font-weight: 650; font-size: 1.05em; margin: 0; flex: 1; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
.chatup-count { color: var(--chatup-muted); font-size: .9em; white-space: nowrap; }
.chatup-mode { margin: 0; padding: 4px 16px; color: var(--chatup-muted); font-size: .85em; border-top: 1px solid var(--chatup-border); }
.chatup-active {
  margin: 0; padding: 6px 16px; border-bottom: 1px solid var(--chatup-border);
  color: var(--chatup-muted); font-size: .85em;
  overflow: hidden; text-overflow: ellipsis; white-space: nowrap;
}
.chatup-status { display: flex; align-items: center; gap: 6px; color: var(--chatup-muted); font-size: .85em; white-space: nowrap; }
.chatup-status::before {
  content: ""; width: 8px; height: 8px; border-radius: 50%; background: #d0a21b;
}
.chatup-status[data-status="connected"]::before { background: #1f9d55; }
.chatup-status[data-status="closed"]::before,
.chatup-status[data-status="offline"]::before,
.chatup-status[data-status="no-worker"]::before { background: #c0392b; }
.chatup-body { position: relative; flex: 1; min-height: 0; }
.chatup-list {
  list-style: none; margin: 0; padding: 12px 16px; height: 100%;
  overflow-y: auto; display: flex; flex-direction: column; gap: 8px;
}
.chatup-msg { display: flex; flex-direction: column; max-width: 100%; }
.chatup-msg[data-cont] { margin-top: -5px; }
.chatup-msg[data-cont] .chatup-msg-head {
  position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap;
}
.chatup-msg-head { display: flex; align-items: baseline; gap: 8px; }
.chatup-avatar {
  width: 22px; height: 22px; border-radius: 50%; flex: none; align-self: center;
  display: inline-flex; align-items: center; justify-content: center;
  font-size: 11px; font-weight: 700; color: #fff; background: var(--chatup-muted);
  overflow: hidden;
}
.chatup-avatar img { width: 100%; height: 100%; object-fit: cover; }
.chatup-name { font-weight: 600; }
.chatup-badge {
  font-size: .72em; font-weight: 600; text-transform: uppercase; letter-spacing: .04em;
  padding: 1px 6px; border-radius: 999px; background: var(--chatup-accent); color: var(--chatup-accent-fg);
}
.chatup-time { color: var(--chatup-muted); font-size: .8em; margin-left: auto; }
.chatup-text {
  margin: 3px 0 0 30px; padding: 7px 11px; background: var(--chatup-bubble);
  border-radius: 4px var(--chatup-radius) var(--chatup-radius) var(--chatup-radius);
  white-space: pre-wrap; overflow-wrap: anywhere; align-self: flex-start;
}
.chatup-msg[data-mine] .chatup-text { background: color-mix(in srgb, var(--chatup-accent) 12%, var(--chatup-bg)); }
.chatup-msg[data-role="system"] .chatup-text { background: transparent; border: 1px dashed var(--chatup-border); color: var(--chatup-muted); }
.chatup-msg[data-deleted] .chatup-text { background: transparent; border: 1px dashed var(--chatup-border); color: var(--chatup-muted); font-style: italic; }
.chatup-actions { display: flex; gap: 4px; margin: 2px 0 0 30px; }
.chatup-act {
  font: inherit; font-size: .78em; border: 1px solid var(--chatup-border); border-radius: 999px;
  padding: 1px 8px; cursor: pointer; background: var(--chatup-bg); color: var(--chatup-muted);
}
.chatup-act[data-armed] { border-color: var(--chatup-error); color: var(--chatup-error); }
.chatup-act:disabled { cursor: progress; }
.chatup-act:focus-visible { outline: 2px solid var(--chatup-fg); outline-offset: 1px; }
.chatup-notice { align-self: center; color: var(--chatup-muted); font-size: .85em; }
.chatup-empty { margin: auto; color: var(--chatup-muted); text-align: center; }
.chatup-more {
  position: absolute; left: 50%; bottom: 10px; transform: translateX(-50%);
  border: 0; border-radius: 999px; padding: 6px 14px; cursor: pointer;
  background: var(--chatup-accent); color: var(--chatup-accent-fg); font: inherit; font-size: .85em;
  box-shadow: 0 2px 8px rgba(0,0,0,.15);
}
.chatup-error {
  margin: 0 16px 8px; padding: 8px 12px; border-radius: 8px;
  background: var(--chatup-error-bg); color: var(--chatup-error); font-size: .9em;
}
.chatup-form { display: flex; gap: 8px; padding: 12px 16px; border-top: 1px solid var(--chatup-border); }
.chatup-input {
  flex: 1; min-width: 0; font: inherit; color: inherit; background: var(--chatup-bg);
  border: 1px solid var(--chatup-border); border-radius: 999px; padding: 9px 14px;
}
.chatup-input:focus { outline: 2px solid color-mix(in srgb, var(--chatup-accent) 45%, transparent); border-color: var(--chatup-accent); }
.chatup-send {
  font: inherit; font-weight: 600; border: 0; border-radius: 999px; padding: 9px 18px; cursor: pointer;
  background: var(--chatup-accent); color: var(--chatup-accent-fg);
}
.chatup-send:disabled, .chatup-input:disabled { opacity: .55; cursor: not-allowed; }
.chatup-send:focus-visible, .chatup-more:focus-visible { outline: 2px solid var(--chatup-fg); outline-offset: 2px; }
.chatup-sr { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
`;
