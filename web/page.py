"""The Gradio page: chat (typed or spoken) with cited, streamed, spoken answers; documents; settings.

`serve(engines)` loads every model up front, refreshes the documents folder, and serves the page
(what `python app.py serve` runs). `launch(...)` does the same without blocking, for the tests.
`build_page(engines)` only builds the Blocks. The named API endpoint `/ask` takes
`(question, session_id="")` and streams `(answer, sources)`; see `web.chat.ChatHandlers.ask_api`.
"""
from __future__ import annotations

import logging
import os

import gradio as gr
from gradio.utils import get_upload_folder
from starlette.middleware import Middleware

from common.errors import RagError, UserInputError, one_line
from web.call import CHECK_MIC_JS, IDLE, PLAYER_JS, SYNC_MIC_JS, CallHandlers, end_call
from web.chat import ANSWER_LANGUAGES, ChatHandlers, voice_choices, voice_value, voices_by_language
from web.documents import DocumentHandlers
from web.fairness import limit_per_client
from web.guard import HostGuard
from web.login import LoginThrottle
from web.upload_limit import UploadLimit
from web.uploads import recover_uploads
from web.render import SOURCES_EMPTY, profile_markdown

log = logging.getLogger(__name__)
TITLE = "Ask your documents"

CSS = """
#rag-header h1 { margin-bottom: 0.1em; }
#rag-header p { color: var(--body-text-color-subdued); margin-top: 0; }
#rag-sources { max-height: 640px; overflow-y: auto; }
.rag-sources-empty { color: var(--body-text-color-subdued); padding: 0.5em 0.2em; }
.rag-source { border: 1px solid var(--border-color-primary); border-radius: 8px; padding: 0.45em 0.7em;
              margin-bottom: 0.5em; background: var(--background-fill-secondary); }
.rag-source summary { cursor: pointer; line-height: 1.45; }
.rag-n { font-weight: 700; color: var(--color-accent); margin-right: 0.2em; }
.rag-doc { font-weight: 600; }
.rag-where { display: block; font-size: 0.85em; color: var(--body-text-color-subdued); margin-left: 1.6em; }
.rag-score { display: block; font-size: 0.8em; color: var(--body-text-color-subdued); margin-left: 1.6em; }
.rag-passage { white-space: pre-wrap; font-size: 0.9em; margin-top: 0.45em; padding-top: 0.45em;
               border-top: 1px dashed var(--border-color-primary); }
#rag-ask { align-self: stretch; }
#rag-call-status [data-testid="status-tracker"] { display: none !important; }   /* the stream's timer: noise */
"""

INTRO = ("Ask a question about your documents by typing it or by recording it with the microphone. "
         "Answers are written only from your documents and cite the passages they come from as **[1]**, "
         "**[2]**… — open a source on the right to read it. Add or remove documents in the **Documents** tab.")


BROWSER_STATE_KEY = "voice-rag-session-id"     # public, see _browser_key


def _browser_key(cfg) -> str:
    """The key Gradio's BrowserState encrypts the stored session id with, in the browser. Gradio sends
    it to every visitor in the page config, so it is no secret and protects nothing: a constant, the
    same on every replica and across restarts. A data dir made by an older version keeps the key it
    made then (`web/browser-state.key`), so that the chats its visitors' browsers stored still load."""
    legacy = cfg.data_path / "web" / "browser-state.key"
    try:
        return legacy.read_text(encoding="utf-8").strip() or BROWSER_STATE_KEY
    except FileNotFoundError:
        return BROWSER_STATE_KEY
    except OSError as err:
        log.warning("could not read %s (%s): browsers' stored chats from before will not load", legacy, err)
        return BROWSER_STATE_KEY


def load_models(engines) -> str | None:
    """Load everything before the first visitor; returns why speech recognition is unavailable, if so.

    The chat model, embedder, index and history are required (a RagError ends `serve`). Speech is
    optional: a missing speech model leaves the microphone off with a note instead of no page at all.
    """
    engines.index, engines.ingestor, engines.retriever, engines.llm, engines.history  # noqa: B018 - load
    # The first typed question then reads only its own part of the prompt, as every later one does.
    engines.pipeline().warm_system_prompt(voice=False)
    if engines.cfg.tts.enabled:
        engines.synthesizer  # noqa: B018 - a FallbackSynthesizer falls back to espeak-ng by itself
    try:
        engines.transcriber  # noqa: B018
    except RagError as err:
        log.warning("speech recognition is off: %s", one_line(err))
        return one_line(err)
    return None


def build_page(engines, transcriber_error: str | None = None) -> gr.Blocks:
    cfg = engines.cfg
    chat = ChatHandlers(engines, transcriber_error)
    docs = DocumentHandlers(engines)
    calls = CallHandlers(engines, chat, transcriber_error)
    tts_on = cfg.tts.enabled
    synth_name = None
    if tts_on and engines.loaded("synthesizer"):
        synth_name = getattr(engines.synthesizer, "name", None)

    with gr.Blocks(title=TITLE, analytics_enabled=False, delete_cache=(900, 3600)) as demo:
        session = gr.BrowserState("", storage_key="voice-rag-session", secret=_browser_key(cfg))
        call_state = gr.State(None, delete_callback=end_call)     # this tab's call; ended when the tab goes
        gr.Markdown(f"# {TITLE}\n{INTRO}", elem_id="rag-header")
        with gr.Tabs():
            with gr.Tab("Chat", id="chat"):
                with gr.Row(equal_height=False):
                    with gr.Column(scale=3, min_width=420):
                        chatbot = gr.Chatbot(
                            label="Conversation", height=480, elem_id="rag-chat", buttons=["copy"],
                            feedback_options=None, group_consecutive_messages=False,
                            placeholder="**No questions yet.** Try: *When did the library abolish fines?*")
                        with gr.Row(equal_height=True):
                            question = gr.Textbox(show_label=False, scale=5, lines=1, max_lines=4,
                                                  placeholder="Type a question and press Enter…",
                                                  elem_id="rag-question", autofocus=True)
                            ask = gr.Button("Ask", variant="primary", scale=1, min_width=90, elem_id="rag-ask")
                        search_in = gr.Dropdown(label="Search in", choices=[], multiselect=True,
                                                info="Only these documents; leave empty to search all of them.",
                                                elem_id="rag-search-in")
                        with gr.Row(equal_height=False):
                            mic = gr.Audio(sources=["microphone", "upload"], type="filepath", scale=3,
                                           label="Ask by voice: Record, then Stop"
                                           if transcriber_error is None else "Voice questions are off (see Settings)",
                                           elem_id="rag-mic", interactive=transcriber_error is None)
                            with gr.Column(scale=2, min_width=220):
                                spoken = gr.Audio(label="Spoken answer", streaming=True, autoplay=True,
                                                  interactive=False, visible=tts_on, elem_id="rag-spoken",
                                                  buttons=["download"])
                                speak = gr.Checkbox(label="Speak answers aloud", value=tts_on,
                                                    interactive=tts_on, elem_id="rag-speak")
                                new_chat = gr.Button("New chat", variant="secondary", elem_id="rag-new-chat")
                        with gr.Row(equal_height=True):
                            talk = gr.Button("Talk", variant="primary", scale=1, min_width=110, elem_id="rag-talk",
                                             interactive=transcriber_error is None)
                            mute = gr.Checkbox(label="Mute", value=False, scale=0, min_width=90, elem_id="rag-mute")
                            call_status = gr.Markdown(IDLE, elem_id="rag-call-status")
                        call_mic = gr.Audio(sources=["microphone"], type="numpy", streaming=True, visible="hidden",
                                            elem_id="rag-call-mic", label="Call microphone")
                        call_player = gr.Textbox(visible="hidden", elem_id="rag-call-player")
                        mic_problem = gr.Textbox(visible="hidden", elem_id="rag-mic-problem")
                    with gr.Column(scale=2, min_width=300):
                        gr.Markdown("### Sources")
                        sources = gr.HTML(SOURCES_EMPTY, elem_id="rag-sources")
            with gr.Tab("Documents", id="documents") as docs_tab:
                gr.Markdown(
                    f"Drop files below to add them ({' '.join(cfg.documents.extensions)}; up to "
                    f"{cfg.documents.max_file_mb:g} MB each, {cfg.documents.max_upload_files} at a time), or add "
                    "a web page by its address. Changed files are re-read; unchanged ones are skipped.")
                with gr.Row(equal_height=False):
                    upload = gr.File(label="Add files", file_count="multiple", elem_id="rag-upload",
                                     file_types=list(cfg.documents.extensions), height=140)
                    with gr.Column():
                        url = gr.Textbox(label="Add a web page", placeholder="https://example.org/page.html",
                                         elem_id="rag-url")
                        with gr.Row():
                            add_url = gr.Button("Add web page", elem_id="rag-add-url")
                            reindex = gr.Button("Re-index folder", elem_id="rag-reindex")
                doc_status = gr.Markdown(elem_id="rag-doc-status")
                table = gr.Dataframe(headers=["Document", "Passages", "Added from"], interactive=False,
                                     elem_id="rag-doc-table", wrap=True, max_height=420,
                                     column_widths=["60%", "15%", "25%"])
                with gr.Row(equal_height=False):
                    to_remove = gr.Dropdown(label="Remove a document from the index", choices=[], scale=3,
                                            elem_id="rag-remove-choice")
                    with gr.Column(scale=1, min_width=160):
                        remove = gr.Button("Remove", variant="stop", elem_id="rag-remove")
            with gr.Tab("Settings", id="settings") as settings_tab:
                top_k = gr.Slider(1, 20, value=min(cfg.retrieval.k, 20), step=1, elem_id="rag-top-k",
                                  label="Passages to retrieve per question (top-k)",
                                  info="More passages give the model more to read but make answers slower.")
                gr.Markdown("Speech: use **Speak answers aloud** under the chat to turn spoken answers on or off; "
                            "choose how they sound here (for this browser tab).")
                with gr.Row(equal_height=True):
                    voices = voice_choices(engines) if tts_on else [(cfg.tts.backend, "")]
                    voice_choice = gr.Dropdown(label="Voice", choices=voices, interactive=tts_on,
                                               value=voice_value(cfg.tts.backend, cfg.tts.voice) if tts_on else "",
                                               elem_id="rag-voice", info="The voice of spoken answers.")
                    rate = gr.Slider(0.75, 1.5, value=min(1.5, max(0.75, cfg.tts.rate)), step=0.05,
                                     label="Speaking rate", info="1 is normal speed; higher is faster.",
                                     interactive=tts_on, elem_id="rag-rate")
                with gr.Row(equal_height=True):
                    answer_language = gr.Dropdown(label="Answer language", choices=ANSWER_LANGUAGES,
                                                  value=cfg.prompt.answer_language or "", elem_id="rag-answer-language",
                                                  info="Answers are written (and spoken) in this language; "
                                                       "automatic: the question's.")
                    gr.Markdown(voices_by_language(engines) if tts_on else "", elem_id="rag-voices-by-language")
                gr.Markdown("### What runs this page")
                profile = gr.Markdown(elem_id="rag-profile")

        # -- events ------------------------------------------------------------------------------
        chat_kw = dict(concurrency_id="chat", concurrency_limit=cfg.server.concurrency_limit,
                       api_visibility="private", show_progress="minimal")
        doc_kw = dict(concurrency_id="ingest", concurrency_limit=1, api_visibility="private")
        answer_out = [chatbot, sources, spoken, question, session]
        ask_in = [question, chatbot, session, speak, top_k, voice_choice, rate, search_in, answer_language]
        # One listener for Enter and Ask, so a question sent while an answer streams waits for it and then
        # goes (always_last: the box is read when its turn comes); a second click was dropped before, and
        # Enter during an Ask-started answer ran beside it into the same chat.
        gr.on([question.submit, ask.click], chat.ask_text, ask_in, answer_out, show_progress_on=[chatbot],
              trigger_mode="always_last", **chat_kw)
        voice_in = [mic, chatbot, session, speak, top_k, voice_choice, rate, search_in, answer_language]
        mic.stop_recording(chat.ask_voice, voice_in, answer_out + [mic], show_progress_on=[chatbot], **chat_kw)
        mic.upload(chat.ask_voice, voice_in, answer_out + [mic], show_progress_on=[chatbot], **chat_kw)
        for clearing in (new_chat.click, chatbot.clear):     # the chat's own bin icon forgets too
            clearing(chat.clear, [session], [session, chatbot, sources, question, spoken],
                     api_visibility="private", queue=False)
        speak.change(lambda on: gr.update(visible=bool(on)), [speak], [spoken], api_visibility="private",
                     queue=False)
        call_kw = dict(concurrency_id="call", concurrency_limit=None, api_visibility="private",
                       show_progress="hidden")
        talk.click(calls.toggle, [call_state, session, chatbot, voice_choice, rate, mic_problem],
                   [call_state, talk, call_mic, call_status, session, call_player], js=CHECK_MIC_JS,
                   **call_kw).then(None, None, None, js=SYNC_MIC_JS)
        call_mic.stream(calls.stream, [call_mic, call_state, chatbot, mute],
                        [chatbot, sources, call_status, call_player, call_state, talk, call_mic],
                        stream_every=0.25, time_limit=None, **call_kw)
        call_player.change(None, [call_player], None, js="(v) => { window.ragCall && window.ragCall.take(v); }")
        demo.unload(calls.closed)

        listing = [table, to_remove, search_in]
        upload.upload(docs.add_files, [upload], [doc_status, *listing, upload], **doc_kw)
        add_url.click(docs.add_url, [url], [doc_status, *listing, url], **doc_kw)
        url.submit(docs.add_url, [url], [doc_status, *listing, url], **doc_kw)
        reindex.click(docs.reindex, None, [doc_status, *listing], **doc_kw)
        remove.click(docs.remove, [to_remove], [doc_status, *listing], **doc_kw)
        docs_tab.select(docs.listing, None, listing, api_visibility="private", queue=False)

        def show_profile():
            # engines.placed: the devices the plan chose, not the `auto` written in the config
            return profile_markdown(engines.placed, synth_name, transcriber_error, engines.index.catalog.counts())

        settings_tab.select(show_profile, None, profile, api_visibility="private", queue=False)
        demo.load(chat.restore, [session], [session, chatbot, sources], api_visibility="private")
        demo.load(docs.listing, None, listing, api_visibility="private")
        demo.load(show_profile, None, profile, api_visibility="private")

        gr.api(chat.ask_api, api_name="ask", concurrency_id="chat",
               concurrency_limit=cfg.server.concurrency_limit)
    return demo


def auth_pair(cfg) -> tuple[str, str] | None:
    """(username, password) from the config, else from the environment variables it names."""
    auth = cfg.server.auth
    user = auth.username or os.environ.get(auth.username_env) or ""
    password = auth.password or os.environ.get(auth.password_env) or ""
    if bool(user) != bool(password):
        log.warning("login is OFF: only one of username and password is set (server.auth, $%s, $%s)",
                    auth.username_env, auth.password_env)
    return (user, password) if user and password else None


def launch(engines, host: str | None = None, port: int | None = None, block: bool = False,
           load: bool = True) -> tuple[gr.Blocks, str]:
    """Load models, refresh the documents folder, build and start the page; returns (demo, local URL)."""
    cfg = engines.cfg
    transcriber_error = load_models(engines) if load else None
    report = engines.ensure_documents(progress=block, rescan=True)
    if report is not None:
        log.info("documents folder %s: %s", cfg.documents.folder, report.summary())
        for err in report.errors:
            log.warning("skipped: %s", err.get("error"))
    recover_uploads(engines.ingestor, engines.index.catalog, (cfg.data_path / "uploads").resolve())
    demo = build_page(engines, transcriber_error)
    demo.queue(default_concurrency_limit=cfg.server.concurrency_limit, max_size=cfg.server.max_queue)
    limit_per_client(demo, "ask", cfg.server.max_queue_per_client)
    auth = auth_pair(cfg)
    host = host or cfg.server.host
    port = port or cfg.server.port
    if host not in ("127.0.0.1", "localhost", "::1") and auth is None:
        log.warning("serving on %s without a login: anyone who can reach this port can read your documents; "
                    "set RAG_USERNAME and RAG_PASSWORD", host)
    if host in ("0.0.0.0", "::") and not cfg.server.allowed_hosts:
        log.warning("serving on %s, but only loopback names are accepted in the Host header: list the names "
                    "clients use in server.allowed_hosts", host)
    theme = gr.themes.Soft(primary_hue="blue", neutral_hue="slate")
    docs = cfg.documents
    middleware = [Middleware(HostGuard, allowed_hosts=cfg.server.allowed_hosts, bind_host=host),
                  Middleware(UploadLimit, max_files=docs.max_upload_files, cache_dir=get_upload_folder(),
                             max_bytes=int(docs.max_upload_files * docs.max_file_mb * 1e6) + 1_000_000,
                             max_cache_bytes=int(cfg.server.upload_cache_mb * 1e6))]
    if auth:
        middleware.append(Middleware(LoginThrottle))
    try:
        _, url, _ = demo.launch(
            server_name=host, server_port=port, auth=auth, auth_message=f"{TITLE}: please log in.",
            prevent_thread_lock=not block, quiet=not block, show_error=False,
            max_file_size=int(cfg.documents.max_file_mb * 1e6), footer_links=["api"], theme=theme, css=CSS,
            ssr_mode=False, mcp_server=False, allowed_paths=[], pwa=False, head=PLAYER_JS,
            app_kwargs={"middleware": middleware})
    except OSError as err:     # port taken, address not on this host: one line from the CLI, no traceback
        detail = " ".join(str(err).split())[:200]
        raise UserInputError(f"cannot serve on {host}:{port} ({detail}); pass --port with a free port "
                             "or --host with an address of this machine") from None
    return demo, url


def serve(engines, host: str | None = None, port: int | None = None) -> None:
    """`python app.py serve`: blocks until interrupted."""
    launch(engines, host=host, port=port, block=True)
