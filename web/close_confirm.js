// "Close this tab although its shell still runs something?" A modal dialog (not
// window.confirm, which blocks the page and can't be styled): keys pressed in it stay in it,
// Esc or "Keep it" answer no, "Close and end it" answers yes. The question, not a button, has
// the focus: a key meant for the shell (Space, Enter) answers nothing; Tab reaches the buttons.

export class CloseConfirm {
  constructor() {
    this.dialog = document.getElementById('confirm-close');
    this.text = document.getElementById('confirm-close-text');
    this.resolve = null;
    // The page's shortcuts and the terminal must not see keys pressed here.
    this.dialog.addEventListener('keydown', (event) => event.stopPropagation());
    this.dialog.addEventListener('close', () => {
      const resolve = this.resolve;
      this.resolve = null;
      if (resolve) resolve(this.dialog.returnValue === 'close');
    });
  }

  get isOpen() {
    return this.dialog.open;
  }

  // Resolves true when the person chose to close (or, with other `labels`, said yes).
  ask(message, { yes = 'Close and end it', no = 'Keep it' } = {}) {
    if (this.dialog.open) return Promise.resolve(false);
    this.text.textContent = message;
    document.getElementById('confirm-close-yes').textContent = yes;
    document.getElementById('confirm-close-keep').textContent = no;
    this.dialog.returnValue = '';
    this.dialog.showModal();
    this.text.focus();
    return new Promise((resolve) => {
      this.resolve = resolve;
    });
  }
}
