"""What every stage and training loop shares and no model needs: where a loop runs (device,
mixed precision, processes: ``context``), stage records (what an artefact was built from:
``records``), checkpoint naming, listing, resume and retention (``checkpoints``), and the one
sample rate.

Kept free of heavy imports at package level: the recipe calls ``python -m w2v.bin.stage_record``
before every stage.
"""

# Every corpus, model and feature here is 16 kHz audio.
SAMPLE_RATE = 16000
