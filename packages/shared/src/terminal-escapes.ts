/**
 * Terminal control sequences, for text whose reader is not a terminal (the
 * API's JSON, the dashboard, stored errors, `nixfarm why`). Nix colours its
 * messages even when they travel as data: a failed build's error over the
 * serve protocol reads `\x1b[0mbuilder for '\x1b[35;1m/nix/store/...drv\x1b[0m'
 * failed`, and builders colour their own output. Nix strips them itself only
 * where it writes to a non-terminal stderr (filterANSIEscapes).
 *
 * Removed: CSI sequences (colours, bold, cursor moves, erases, private modes),
 * OSC sequences ending in BEL or ST (titles, OSC 8 hyperlinks, whose text
 * stays), DCS/SOS/PM/APC strings, the short ESC sequences (charset choice,
 * keypad modes), the 8-bit CSI and a stray ESC. Everything else, including
 * tabs, newlines and carriage returns, is left as it is.
 */
const TERMINAL_ESCAPE =
  /\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\|$)|\x1b[PX^_][^\x1b]*(?:\x1b\\|$)|\x1b[ -/]*[0-~]|\x9b[0-?]*[ -/]*[@-~]|\x1b/g;

/** The text without terminal control sequences; plain text comes back unchanged. */
export function stripTerminalEscapes(text: string): string {
  // Most text has none: skip the regex's copy.
  if (!text.includes('\x1b') && !text.includes('\x9b')) return text;
  return text.replace(TERMINAL_ESCAPE, '');
}
