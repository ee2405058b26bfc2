"""Self-supervised objectives around the ``w2v.models`` encoders, and the pretraining loop.

The vector quantizers are part of the models that own them (``w2v.models.quantizers``); this
package imports ``w2v.models``, never the reverse.

| module | holds |
|---|---|
| ``masking`` | span masks (p = 0.065, M = 10 → ≈ 49 % of frames), channel masks |
| ``losses`` | wav2vec 2.0 contrastive + diversity + feature penalty, HuBERT cluster CE, data2vec regression |
| ``future_prediction`` | wav2vec / vq-wav2vec K-step binary future prediction with step-specific ``h_k`` |
| ``ema`` | data2vec EMA teacher (τ 0.999 → 0.9999) and top-K instance-normalised targets |
| ``kmeans`` | torch k-means, 39-dim MFCC, frame labelers (MFCC or a layer of a previous model) |
| ``augment`` | WavLM utterance mixing |
| ``pretraining`` | ``Wav2Vec2Pretrainer``, ``Data2VecPretrainer``, ``HubertPretrainer`` (WavLM), ``Wav2VecPretrainer`` |
| ``train`` | the loop behind ``python -m w2v.bin.pretrain`` |
"""

from w2v.ssl.pretraining import (
    Data2VecPretrainConfig,
    Data2VecPretrainer,
    HubertPretrainConfig,
    HubertPretrainer,
    PretrainOutput,
    Wav2Vec2PretrainConfig,
    Wav2Vec2Pretrainer,
    Wav2VecPretrainConfig,
    Wav2VecPretrainer,
    wavlm_pretrain_config,
)

__all__ = [
    "Data2VecPretrainConfig",
    "Data2VecPretrainer",
    "HubertPretrainConfig",
    "HubertPretrainer",
    "PretrainOutput",
    "Wav2Vec2PretrainConfig",
    "Wav2Vec2Pretrainer",
    "Wav2VecPretrainConfig",
    "Wav2VecPretrainer",
    "wavlm_pretrain_config",
]
