// An AudioWorklet processor: the microphone's audio (mono, or the channels' mean) resampled from
// the context's rate to the 24 kHz 16-bit PCM the live endpoint takes, posted to the page in
// tenth-of-a-second chunks.

const OUTPUT_RATE = 24000;
const CHUNK_SAMPLES = OUTPUT_RATE / 10;

class PcmResampler extends AudioWorkletProcessor {
  constructor() {
    super();
    // Input samples per output sample; `sampleRate` is the context's, a global of this scope.
    this.step = sampleRate / OUTPUT_RATE;
    this.position = 0; // where the next output sample falls, in input samples from `sum`'s start
    this.sum = 0; // input samples since the last output sample, summed: a box filter against aliasing
    this.count = 0;
    this.chunk = new Int16Array(CHUNK_SAMPLES);
    this.filled = 0;
  }

  process(inputs) {
    const channels = inputs[0];
    if (!channels || !channels.length) return true;
    const length = channels[0].length;
    for (let index = 0; index < length; index += 1) {
      let sample = 0;
      for (const channel of channels) sample += channel[index];
      this.sum += sample / channels.length;
      this.count += 1;
      this.position += 1;
      if (this.position >= this.step) {
        this.position -= this.step;
        this.emit(this.sum / this.count);
        this.sum = 0;
        this.count = 0;
      }
    }
    return true;
  }

  emit(sample) {
    const clipped = Math.max(-1, Math.min(1, sample));
    this.chunk[this.filled] = clipped < 0 ? clipped * 0x8000 : clipped * 0x7fff;
    this.filled += 1;
    if (this.filled === CHUNK_SAMPLES) {
      this.port.postMessage(this.chunk.buffer, [this.chunk.buffer]);
      this.chunk = new Int16Array(CHUNK_SAMPLES);
      this.filled = 0;
    }
  }
}

registerProcessor("pcm-resampler", PcmResampler);
