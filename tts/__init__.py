"""Text to speech: speak each sentence of a streamed answer with an engine loaded once.

    from common.sentences import SentenceSplitter
    from tts.registry import load_synthesizer
    voice = load_synthesizer(cfg.tts)                 # hibari, falling back to espeak-ng
    splitter = SentenceSplitter()
    for delta in answer_stream:
        for sentence in splitter.feed(delta):
            samples = voice.synthesize(sentence)       # float32 mono at voice.sample_rate
    for sentence in splitter.flush(): ...

Imports only common/. Engines are imported only when chosen (tts/registry.py), so importing this
package is cheap and never loads a model.
"""
