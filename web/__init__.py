"""The Gradio web page: chat by text or voice, spoken answers, documents, settings, and the `/ask` API.

`web.page.serve(engines)` is what `python app.py serve` runs; `web.page.build_page(engines)` builds the
Blocks without launching it. Gradio is imported only in this package (the app layer).
"""
