"""What every stage and training loop shares and no model needs: stage records (what an artefact
was built from), and checkpoint naming, listing, resume and retention.

Kept free of heavy imports at package level: the recipe calls ``python -m w2v.bin.stage_record``
before every stage.
"""
