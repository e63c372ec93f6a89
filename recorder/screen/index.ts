/** Desktop (VNC, RDP) screen recording: framebuffer model, NDJSON writer with PNG keyframes, replay. */
export { Framebuffer, validSize, MAX_DIMENSION, MAX_PIXELS } from './framebuffer.js';
export { encodePng, decodePng } from './png.js';
export { ScreenWriter, type ScreenWriterOptions } from './writer.js';
export { ScreenReplay, applyLine, type ScreenLine, type SeekEntry } from './replay.js';
