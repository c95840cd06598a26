// Which renderer draws a terminal: xterm.js's WebGL addon on a real GPU, its DOM renderer
// otherwise. WebGL on a software rasteriser (SwiftShader, llvmpipe: no GPU, or GPU disabled)
// costs more CPU than the DOM renderer (in headless Chromium without a GPU, ttyd's page on
// SwiftShader's WebGL drew a cat 5x slower than on the DOM renderer: bench/terminal_speed.md),
// so "auto" takes it only on hardware. When WebGL
// cannot start or its context is lost (driver reset, too many contexts), the terminal goes
// back to the DOM renderer and keeps its content. The addon (a quarter of the page's
// JavaScript) is fetched only when a terminal is to use it.

export const RENDERERS = { auto: 'Automatic (GPU when there is one)', webgl: 'WebGL', dom: 'DOM' };

const SOFTWARE_GL = /swiftshader|llvmpipe|softpipe|software|basic render/i;

// Asked once per page: a throwaway context, released at once.
export function hardwareWebgl() {
  const gl = document.createElement('canvas').getContext('webgl2');
  if (!gl) return false;
  const info = gl.getExtension('WEBGL_debug_renderer_info');
  const renderer = String(gl.getParameter(info ? info.UNMASKED_RENDERER_WEBGL : gl.RENDERER));
  gl.getExtension('WEBGL_lose_context')?.loseContext();
  return !SOFTWARE_GL.test(renderer);
}

export function wantsWebgl(choice, hardwareGpu) {
  return choice === 'webgl' || (choice === 'auto' && hardwareGpu);
}

// One terminal's renderer; `pane.dataset.renderer` says which one draws ("webgl" or "dom"),
// and `pane.dataset.webgl` why WebGL does not, when it was wanted ("unavailable", "lost").
export class Renderer {
  constructor(term, pane) {
    this.term = term;
    this.pane = pane;
    this.webgl = null;
    this.wanted = false;
    this.loading = false;
    this.disposed = false;
    this.pane.dataset.renderer = 'dom';
  }

  use(wantWebgl) {
    this.wanted = wantWebgl;
    if (wantWebgl && !this.webgl && !this.loading) this.startWebgl();
    else if (!wantWebgl && this.webgl) this.stopWebgl();
  }

  async startWebgl() {
    this.loading = true;
    let WebglAddon;
    try {
      ({ WebglAddon } = await import('/vendor/addon-webgl.mjs'));
    } catch {
      this.pane.dataset.webgl = 'unavailable'; // Not served (or offline): the DOM renderer stays.
      return;
    } finally {
      this.loading = false;
    }
    // The setting may have changed, or the tab closed, while the addon loaded.
    if (!this.wanted || this.disposed || this.webgl) return;
    const addon = new WebglAddon();
    try {
      this.term.loadAddon(addon);
    } catch {
      // No WebGL2 here: the DOM renderer stays, which is all a terminal needs.
      addon.dispose();
      this.pane.dataset.webgl = 'unavailable';
      return;
    }
    this.webgl = addon;
    this.pane.dataset.renderer = 'webgl';
    addon.onContextLoss(() => {
      this.stopWebgl();
      this.pane.dataset.webgl = 'lost';
    });
  }

  stopWebgl() {
    const addon = this.webgl;
    this.webgl = null;
    this.pane.dataset.renderer = 'dom';
    addon?.dispose();
  }

  dispose() {
    this.disposed = true;
    this.webgl?.dispose();
    this.webgl = null;
  }
}
