"""Embedding: the ``Embedder`` port and its factory (``base``), the model
folder (``model``), the tokenizer alone for the parse stage (``tokenizer``),
the sentence-transformers adapter (``st``) and the ONNX Runtime adapters
(``onnx``, with the graph builders ``onnx_bert`` and ``onnx_export``)."""
