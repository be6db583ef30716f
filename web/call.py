"""The Chat tab's call mode: one Talk button starts a hands-free conversation, the same button ends it.

While the call is on, the browser streams the microphone (echo cancellation on) to `stream`, which
feeds a `rag.call.Call` and turns what it reports into the page: the state line (listening, hearing
you with the words so far, thinking, speaking), the chat and sources as for any question, and the
answer's speech, sent as WAV chunks to a small player in the page (PLAYER_JS) that plays them back to
back and stops at once on barge-in. One Call per browser tab, kept in a gr.State: a closed tab's call
is ended by the state's delete callback, an idle one by the call itself (call.idle_end_s).
"""
from __future__ import annotations

import base64
import itertools
import json
import logging
import time

import gradio as gr
import numpy as np

from common.errors import RagError, one_line
from common.wav import resample, to_wav_bytes
from rag.call import Call
from web.render import chat_markdown, sources_html

log = logging.getLogger(__name__)
RATE = 16_000
STATES = {"listening": "**Listening…** speak when you are ready.",
          "hearing": "**Hearing you…**", "thinking": "**Thinking…**",
          "speaking": "**Speaking…** talk to interrupt.", "ended": "Call ended. Press **Talk** to start again."}
IDLE = "Press **Talk** for a hands-free conversation: speak, pause, hear the answer, talk over it to interrupt."

# The page's player: WAV chunks (base64) queued on one AudioContext, back to back; `stop` cuts them off.
PLAYER_JS = """
<script>
window.ragCall = {
  ctx: null, next: 0, sources: [], seq: -1, played: 0, stops: 0,
  take(value) {
    if (!value) return;
    const msg = JSON.parse(value);
    if (msg.seq <= this.seq) return;
    this.seq = msg.seq;
    if (msg.stop) this.stop();
    for (const b64 of msg.chunks || []) this.play(b64);
  },
  play(b64) {
    if (!this.ctx) this.ctx = new AudioContext();
    const bytes = Uint8Array.from(atob(b64), c => c.charCodeAt(0));
    this.ctx.decodeAudioData(bytes.buffer).then(buffer => {
      const src = this.ctx.createBufferSource();
      src.buffer = buffer; src.connect(this.ctx.destination);
      const at = Math.max(this.ctx.currentTime, this.next);
      src.start(at); this.next = at + buffer.duration; this.played += 1;
      this.sources.push(src);
      src.onended = () => { this.sources = this.sources.filter(s => s !== src); };
    });
  },
  stop() {
    for (const s of this.sources) { try { s.stop(); } catch (e) {} }
    this.sources = []; this.next = 0; this.stops += 1;
  },
  playing() { return this.sources.length > 0; },
};
</script>
"""

# Before the call starts: is there a microphone this page may use? The answer goes to the server as text.
CHECK_MIC_JS = """
async (...args) => {
  if (window.ragCall && !window.ragCall.ctx) { window.ragCall.ctx = new AudioContext(); }
  let problem = "";
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    problem = "this browser gives the page no microphone (it needs a secure page: https:// or localhost)";
  } else {
    try {
      const stream = await navigator.mediaDevices.getUserMedia({audio: {echoCancellation: true}});
      stream.getTracks().forEach(t => t.stop());
    } catch (e) {
      problem = "the microphone is blocked or missing (" + (e.name || e) + "); allow it for this page and press Talk again";
    }
  }
  args[args.length - 1] = problem;
  return args;
}
"""


# After Talk / End call: start or stop the (hidden) streaming microphone to match the button, by its
# own Record / Stop buttons (a `recording` update does not start a streaming recorder).
SYNC_MIC_JS = """
() => {
  const on = document.querySelector('#rag-talk').innerText.includes('End');
  const mic = document.querySelector('#rag-call-mic');
  const record = mic && mic.querySelector('.record-button');
  const stop = mic && mic.querySelector('.stop-button');
  if (on && record) record.click();
  if (!on && stop) stop.click();
}
"""


def end_call(call: Call | None) -> None:
    """gr.State's delete callback: the tab is gone, so is its call's work."""
    if call is not None:
        call.end("closed")


class CallHandlers:
    def __init__(self, engines, chat, transcriber_error: str | None = None):
        self.engines = engines
        self.chat = chat                          # web.chat.ChatHandlers: sessions and the chosen voice
        self.transcriber_error = transcriber_error
        self._seq = itertools.count()
        self._written: dict[tuple[int, int], str] = {}   # (call, turn) -> the answer's raw text so far
        self._live: dict[str, Call] = {}                  # the tab (Gradio session hash) -> its call

    def _end(self, call: Call, tab: str | None, reason: str) -> None:
        self._live.pop(tab, None)
        for key in [k for k in self._written if k[0] == id(call)]:
            del self._written[key]
        call.end(reason)

    def _player(self, chunks=(), stop=False) -> str:
        return json.dumps({"seq": next(self._seq), "chunks": list(chunks), "stop": stop})

    def toggle(self, call, session, chat, voice_choice, rate, mic_problem, request: gr.Request = None):
        """Talk / End call. Returns (call, button, mic, status, session, player)."""
        skip = gr.skip()
        tab = getattr(request, "session_hash", None)
        if call is not None and not call.ended:
            self._end(call, tab, "ended by the user")
            return None, gr.update(value="Talk", variant="primary"), gr.update(recording=False), \
                STATES["ended"], skip, self._player(stop=True)
        if self.transcriber_error:
            gr.Warning(f"Speech recognition is not available: {self.transcriber_error}")
            return None, skip, skip, IDLE, skip, skip
        if mic_problem:
            gr.Warning(f"No microphone: {mic_problem}.")
            return None, skip, skip, f"No microphone: {mic_problem}.", skip, skip
        session = self.chat.session_of(session)
        started = time.monotonic()
        try:
            synthesizer = self.chat.synthesizer(voice_choice, rate)
            call = Call(self.engines, lambda: time.monotonic() - started, session=session, synthesizer=synthesizer)
            call.warm_up()
        except RagError as err:
            gr.Warning(f"The call could not start: {one_line(err)}")
            return None, skip, skip, IDLE, session, skip
        if tab:
            self._live[tab] = call
        return call, gr.update(value="End call", variant="stop"), gr.update(recording=True), \
            STATES["listening"], session, self._player()

    def closed(self, request: gr.Request = None):
        """The tab was closed or reloaded (Gradio's unload): its call's work stops now, not when Gradio
        drops the tab's state an hour later."""
        tab = getattr(request, "session_hash", None)
        call = self._live.get(tab)
        if call is not None:
            self._end(call, tab, "closed")

    def stream(self, chunk, call, chat, muted, request: gr.Request = None):
        """One chunk of microphone audio. Returns (chat, sources, status, player, call, button, mic)."""
        skip = gr.skip()
        if call is None or chunk is None:
            return skip, skip, skip, skip, call, skip, skip
        if call.ended:                      # it ended itself (idle): forget it here too
            self._end(call, getattr(request, "session_hash", None), call.ended)
        rate, samples = chunk
        audio = np.asarray(samples, np.float32)
        if np.issubdtype(np.asarray(samples).dtype, np.integer):
            audio /= 32768.0
        if audio.ndim > 1:
            audio = audio.mean(axis=1)
        audio = resample(audio, int(rate), RATE)
        call.feed(np.zeros_like(audio) if muted else audio)
        return self._show(call, list(chat or []))

    def _show(self, call: Call, chat: list):
        status, panel, chunks, stop, changed = gr.skip(), gr.skip(), [], False, False
        while not call.events.empty():
            event = call.events.get_nowait()
            if event.kind == "state":
                status = STATES.get(event.value, status)
            elif event.kind == "heard":
                status = f"{STATES['hearing']} _{event.value}_"
            elif event.kind == "question":
                chat += [{"role": "user", "content": event.value}, {"role": "assistant", "content": "…"}]
                changed = True
            elif event.kind == "text" and chat and chat[-1]["role"] == "assistant":
                written = self._written[id(call), event.turn] = self._written.get((id(call), event.turn), "") + event.value
                chat[-1] = {"role": "assistant", "content": chat_markdown(written)}   # document text: no markup
                changed = True
            elif event.kind == "audio":
                chunks.append(base64.b64encode(to_wav_bytes(event.value.samples, event.value.sample_rate)).decode())
            elif event.kind == "stop":
                stop, chunks = True, []
            elif event.kind == "finished":
                record = event.value
                self._written.pop((id(call), record.turn), None)
                said = chat_markdown(record.answer)
                if record.barged_in:
                    said = (f"{chat_markdown(record.spoken)} _(interrupted)_" if record.spoken
                            else "_(interrupted before the answer was spoken)_")
                if chat and chat[-1]["role"] == "assistant":
                    chat[-1] = {"role": "assistant", "content": said}
                panel, changed = sources_html(record.sources), True
            elif event.kind == "notice":
                gr.Warning(event.value[:1].upper() + event.value[1:])
        button = mic = gr.skip()
        if call.ended:                       # it ended itself (idle): the page stops listening too
            button, mic = gr.update(value="Talk", variant="primary"), gr.update(recording=False)
            status = "Call ended: nobody spoke for a while. Press **Talk** to start again."
        player = self._player(chunks, stop) if chunks or stop else gr.skip()
        return (chat if changed else gr.skip()), panel, status, player, (None if call.ended else call), button, mic
