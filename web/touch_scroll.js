// A finger swipe on a terminal scrolls its scrollback, as the mouse wheel does: xterm.js
// follows the wheel but not a touch drag. One finger only: two are the browser's zoom.

export function followTouchScroll(tab) {
  let lastY = null;
  let carried = 0; // the part of a row not scrolled yet
  const pane = tab.pane;
  pane.addEventListener('touchstart', (event) => {
    lastY = event.touches.length === 1 ? event.touches[0].clientY : null;
    carried = 0;
  }, { passive: true });
  pane.addEventListener('touchmove', (event) => {
    if (lastY === null || event.touches.length !== 1) return;
    const y = event.touches[0].clientY;
    carried += lastY - y;
    lastY = y;
    const rowHeight = pane.querySelector('.xterm-screen').getBoundingClientRect().height / tab.term.rows;
    const rows = Math.trunc(carried / rowHeight);
    if (rows !== 0) {
      tab.term.scrollLines(rows);
      carried -= rows * rowHeight;
    }
    // The page itself must not scroll or bounce instead.
    event.preventDefault();
  }, { passive: false });
  pane.addEventListener('touchend', () => {
    lastY = null;
  });
}
