"""Text to speech: split a streamed answer into sentences and speak each with an engine loaded once.

    from tts import SentenceSplitter, load_synthesizer
    voice = load_synthesizer(cfg.tts)                 # hibari, falling back to espeak-ng
    splitter = SentenceSplitter()
    for delta in answer_stream:
        for sentence in splitter.feed(delta):
            samples = voice.synthesize(sentence)       # float32 mono at voice.sample_rate
    for sentence in splitter.flush(): ...

Engines are imported only when chosen, so importing this package is cheap and never loads a model.
"""
from tts.base import FallbackSynthesizer, Synthesizer, load_engine, load_synthesizer
from common.sentences import SentenceSplitter, speakable, split_sentences
from common.wav import concat, to_wav_bytes, write_wav

__all__ = ["FallbackSynthesizer", "SentenceSplitter", "Synthesizer", "concat", "load_engine",
           "load_synthesizer", "speakable", "split_sentences", "to_wav_bytes", "write_wav"]
