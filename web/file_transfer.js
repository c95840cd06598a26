// Files in and out of terminals (issue 12).
// In: files pasted or dropped on a terminal are uploaded to ~/uploads, and their paths are
// typed at that terminal's prompt, shell-quoted, through the terminal's own paste (never with
// Enter: the person decides what to run). Out: `coda-download FILE` in a terminal prints a
// private escape sequence carrying a one-time id; the page fetches that one file and hands it
// to the browser's downloads.

import { api } from './api.js';

// The upload limit and the download sequence's number come from the server
// (GET /api/file-transfer: `config` below), which owns both.
const DOWNLOAD_ID = /^[0-9a-f]{32}$/;
// How long a downloaded file's blob URL lives: revoking it at once can cancel the download.
const BLOB_URL_LIFETIME_MS = 60_000;

// `text` as one shell word (POSIX sh single quotes), the same as Python's shlex.quote.
export function shellQuote(text) {
  if (text && /^[A-Za-z0-9_@%+=:,./-]+$/.test(text)) return text;
  return `'${text.replace(/'/g, `'"'"'`)}'`;
}

// Paste and drop on `container`: files go to the terminal they landed on (`tabFor(element)`),
// which is outlined while files are dragged over it. Returns {upload(tab, files)} for files
// that come another way (the menu's Paste).
// `notify(text, kind)` shows progress ('info'), success ('good') and errors ('bad') on the page.
// `config` is the server's {max_upload_bytes}: the server's check is the one that counts; this
// one spares a long upload that would only be refused.
export function acceptFiles(container, { tabFor, notify, config }) {
  // Capture phase: ahead of xterm.js's own paste handler on its textarea.
  container.addEventListener('paste', (event) => {
    const files = pastedFiles(event.clipboardData);
    const tab = files.length ? tabFor(event.target) : null;
    if (!tab) return;
    event.preventDefault();
    event.stopPropagation();
    uploadInto(tab, files, notify, config.max_upload_bytes);
  }, true);
  // The pane that will take the drop, outlined (style.css: .drop-target) so it is clear which
  // of two split panes gets the files.
  let target = null;
  const showTarget = (pane) => {
    if (pane === target) return;
    target?.classList.remove('drop-target');
    target = pane;
    target?.classList.add('drop-target');
  };
  container.addEventListener('dragover', (event) => {
    if (!carriesFiles(event.dataTransfer)) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = 'copy';
    showTarget(tabFor(event.target)?.pane || null);
  });
  container.addEventListener('dragleave', (event) => {
    if (!event.relatedTarget || !container.contains(event.relatedTarget)) showTarget(null);
  });
  container.addEventListener('drop', (event) => {
    showTarget(null);
    const files = [...(event.dataTransfer?.files || [])];
    if (!files.length) return;
    event.preventDefault();
    const tab = tabFor(event.target);
    if (tab) uploadInto(tab, files, notify, config.max_upload_bytes);
  });
  return { upload: (tab, files) => uploadInto(tab, files, notify, config.max_upload_bytes) };
}

// Files only when the clipboard holds no text: copying cells from a spreadsheet puts a picture
// of them beside the text, and a terminal paste means the text.
function pastedFiles(data) {
  if (!data || data.getData('text/plain')) return [];
  return [...data.files];
}

function carriesFiles(transfer) {
  return Boolean(transfer && [...transfer.types].includes('Files'));
}

async function uploadInto(tab, files, notify, maxBytes) {
  if (tab.inputHandler) {
    notify('This terminal is not at a shell prompt (sign-in or a finished shell); nothing was uploaded.');
    return;
  }
  const paths = [];
  const problems = [];
  for (const file of files) {
    const name = file.name || 'pasted';
    if (file.size > maxBytes) {
      problems.push(`${name} is larger than ${maxBytes / 1024 / 1024} MiB, the upload limit`);
      continue;
    }
    try {
      await api.ensureTrusted();  // the upload carries the cookie: only to a server that proved itself
      const saved = await uploadFile(file, name, (fraction) => notify(`Uploading ${name}… ${Math.round(fraction * 100)}%`, 'info'));
      paths.push(saved.path);
    } catch (err) {
      problems.push(`${name}: ${err.message}`);
    }
  }
  // The tab may have been closed (or sent to the sign-in prompt) while the bytes travelled.
  if (paths.length && !tab.inputHandler && tab.state !== 'closed') {
    tab.paste(`${paths.map(shellQuote).join(' ')} `);
    tab.focus();
  }
  const done = paths.length === 1 ? `Uploaded to ${paths[0]}.` : paths.length ? `Uploaded ${paths.length} files to ~/uploads.` : '';
  const failed = problems.length ? `Not uploaded: ${problems.join('; ')}.` : '';
  notify([done, failed].filter(Boolean).join(' '), failed ? 'bad' : 'good');
}

// XMLHttpRequest rather than fetch: it reports upload progress.
function uploadFile(file, name, onProgress) {
  return new Promise((resolve, reject) => {
    const xhr = new XMLHttpRequest();
    xhr.open('POST', `/api/uploads?name=${encodeURIComponent(name)}`);
    xhr.setRequestHeader('Content-Type', 'application/octet-stream');
    xhr.upload.onprogress = (event) => {
      if (event.lengthComputable && event.total) onProgress(event.loaded / event.total);
    };
    xhr.onload = () => {
      let data = null;
      try {
        data = JSON.parse(xhr.responseText);
      } catch {
        data = null;
      }
      if (xhr.status === 201 && data && data.path) resolve(data);
      else reject(new Error((data && data.error) || `the upload failed with HTTP ${xhr.status}`));
    };
    xhr.onerror = () => reject(new Error('coda_aio is not reachable'));
    xhr.send(file);
  });
}

// Downloads that `coda-download` announces in `tab`'s output. Only live output counts: a
// replayed scrollback holds the sequences of downloads done long ago. Only the session's
// answering tab (the one the person used last) fetches the one-time link: every tab attached
// to the session sees the sequence. Nothing is ever sent to the shell from here. `config` is the server's {download_osc}.
export function watchDownloads(tab, notify, config) {
  tab.term.parser.registerOscHandler(config.download_osc, (data) => {
    const [kind, id] = data.split(';');
    if (!tab.replaying && tab.answering && kind === 'download' && DOWNLOAD_ID.test(id || '')) download(id, notify);
    return true; // ours: no other handler sees it
  });
}

async function download(id, notify) {
  let response;
  try {
    await api.ensureTrusted();
    response = await fetch(`/api/downloads/${id}`);
  } catch {
    notify('Download failed: coda_aio is not reachable.');
    return;
  }
  if (!response.ok) {
    const data = await response.json().catch(() => null);
    notify(`Download failed: ${(data && data.error) || `HTTP ${response.status}`}`);
    return;
  }
  const name = attachmentName(response.headers.get('Content-Disposition')) || 'download';
  notify(`Downloading ${name}…`, 'info');
  let blob;
  try {
    blob = await response.blob();
  } catch (err) {
    notify(`Download of ${name} failed: ${err.message}`);
    return;
  }
  const url = URL.createObjectURL(blob);
  const link = document.createElement('a');
  link.href = url;
  link.download = name;
  link.hidden = true;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), BLOB_URL_LIFETIME_MS);
  notify(`Downloaded ${name}.`, 'good');
}

// The file name from Content-Disposition: filename* (UTF-8) first, then plain filename.
function attachmentName(header) {
  if (!header) return '';
  const extended = /filename\*=UTF-8''([^;]+)/i.exec(header);
  if (extended) {
    try {
      return decodeURIComponent(extended[1]);
    } catch {
      // Malformed: fall back to the plain name.
    }
  }
  const plain = /filename="([^"]*)"/i.exec(header);
  return plain ? plain[1] : '';
}
