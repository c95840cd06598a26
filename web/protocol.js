// The terminal WebSocket protocol (design.md): binary frames, first byte is the frame type.

export const FROM_SERVER = Object.freeze({ OUTPUT: 0x30, EVENT: 0x31 });
// REPLY carries xterm.js's answer to a terminal query (the server passes on only the answers
// of the session's answering client); FOCUS says the person is at this client now.
export const TO_SERVER = Object.freeze({ INPUT: 0x30, RESIZE: 0x31, PAUSE: 0x32, RESUME: 0x33, REPLY: 0x34, FOCUS: 0x35 });

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function frame(type, payload = new Uint8Array(0)) {
  const bytes = new Uint8Array(payload.length + 1);
  bytes[0] = type;
  bytes.set(payload, 1);
  return bytes;
}

export const inputFrame = (text) => frame(TO_SERVER.INPUT, encoder.encode(text));
export const binaryInputFrame = (bytes) => frame(TO_SERVER.INPUT, bytes);
export const resizeFrame = (cols, rows) => frame(TO_SERVER.RESIZE, encoder.encode(JSON.stringify({ cols, rows })));
export const replyFrame = (text) => frame(TO_SERVER.REPLY, encoder.encode(text));
export const focusFrame = () => frame(TO_SERVER.FOCUS);
export const pauseFrame = () => frame(TO_SERVER.PAUSE);
export const resumeFrame = () => frame(TO_SERVER.RESUME);

// Returns {output: Uint8Array} or {event: object}, or null for frames this client ignores.
export function parseFrame(buffer) {
  const bytes = new Uint8Array(buffer);
  if (bytes.length === 0) return null;
  const payload = bytes.subarray(1);
  if (bytes[0] === FROM_SERVER.OUTPUT) return { output: payload };
  if (bytes[0] === FROM_SERVER.EVENT) {
    try {
      return { event: JSON.parse(decoder.decode(payload)) };
    } catch {
      return null;
    }
  }
  return null;
}

// `replayBytes`: the most scrollback to replay on attach (null: all the server keeps).
export function sessionSocketUrl(sessionId, replayBytes = null) {
  const scheme = location.protocol === 'https:' ? 'wss:' : 'ws:';
  const query = replayBytes === null ? '' : `?replay=${replayBytes}`;
  return `${scheme}//${location.host}/api/sessions/${encodeURIComponent(sessionId)}/ws${query}`;
}

// How long the replay may take to arrive, and the scrollback's most bytes worth asking for less.
const REPLAY_SECONDS = 10;
const REPLAY_MIN_BYTES = 16 * 1024;

// A replay the link can bring in about REPLAY_SECONDS, from the browser's estimate of its
// downlink (Network Information API, Chromium); null (all of it) without an estimate.
export function replayBudget(connection = navigator.connection) {
  const mbps = connection && connection.downlink;
  if (!mbps || !Number.isFinite(mbps)) return null;
  return Math.max(REPLAY_MIN_BYTES, Math.floor((mbps * 1e6) / 8 * REPLAY_SECONDS));
}
