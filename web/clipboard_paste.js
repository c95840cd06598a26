// The menu's Paste: what the Clipboard API gives the page, as text or as files. Keyboard paste
// (Ctrl+V, Ctrl+Shift+V) needs none of this: the browser's own paste event carries both.

// The clipboard as {text} or {files}, or {problem}: why the page could not read it, in words
// that say what to do instead.
export async function readClipboard() {
  if (!navigator.clipboard || !navigator.clipboard.read) {
    return { problem: 'This browser does not let the page read the clipboard here (it needs https or localhost). Press Ctrl+V to paste.' };
  }
  let items;
  try {
    items = await navigator.clipboard.read();
  } catch (err) {
    return { problem: `The browser refused the page access to the clipboard (${err.message}). Allow clipboard access for this site, or press Ctrl+V to paste.` };
  }
  // Text wins, as with Ctrl+V: a spreadsheet's cells come with a picture of them.
  const textItem = items.find((item) => item.types.includes('text/plain'));
  if (textItem) return { text: await (await textItem.getType('text/plain')).text() };
  const files = [];
  for (const item of items) {
    const type = item.types.find((t) => t.startsWith('image/'));
    if (type) files.push(new File([await item.getType(type)], `pasted.${type.slice('image/'.length).split('+')[0]}`, { type }));
  }
  if (files.length) return { files };
  return { problem: 'The clipboard holds nothing the terminal can paste (no text and no image).' };
}
