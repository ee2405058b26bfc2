"""CTC acoustic models on fbank: model (``model.py``), batches (``data.py``), CTC losses
(``ctc.py``), training with DDP (``train.py``) and checkpoint averaging (``checkpoint.py``)."""
