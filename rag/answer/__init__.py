"""From retrieved passages to a grounded answer: the prompt, the decline rule, the sentences the model
reads and the evidence quote, and the filters on the streamed text (repetition, grounding)."""
