"""wav2vec-family encoders, their named factories, and ``load_pretrained``.

    from w2v.models import wav2vec2_base, load_pretrained
    model = wav2vec2_base().eval()
    layers, frame_lens = model.extract_features(waveforms, lengths)   # [B, T] -> list of [B, F, D]
    model, config = load_pretrained("wav2vec_small.pt")                # fairseq / HF dir / ours
"""

from w2v.models.config import (
    Data2VecAudioConfig,
    EncoderConfig,
    HubertConfig,
    Wav2Vec2Config,
    WavLMConfig,
    config_from_dict,
    config_to_dict,
)
from w2v.models.encoder import EncoderOutput, SSLEncoder
from w2v.models.factory import (
    FACTORIES,
    build_model,
    data2vec_base,
    data2vec_small,
    data2vec_tiny,
    hubert_base,
    hubert_large,
    hubert_small,
    hubert_tiny,
    wav2vec2_base,
    wav2vec2_large,
    wav2vec2_large_lv60k,
    wav2vec2_small,
    wav2vec2_tiny,
    wavlm_base,
    wavlm_small,
    wavlm_tiny,
)
from w2v.models.loading import (
    BUILDERS,
    FAIRSEQ_CONVERTERS,
    load_pretrained,
    register_builder,
    register_fairseq_converter,
    save_checkpoint,
)

__all__ = [
    "BUILDERS",
    "Data2VecAudioConfig",
    "EncoderConfig",
    "EncoderOutput",
    "FACTORIES",
    "FAIRSEQ_CONVERTERS",
    "HubertConfig",
    "SSLEncoder",
    "Wav2Vec2Config",
    "WavLMConfig",
    "build_model",
    "config_from_dict",
    "config_to_dict",
    "data2vec_base",
    "data2vec_small",
    "data2vec_tiny",
    "hubert_base",
    "hubert_large",
    "hubert_small",
    "hubert_tiny",
    "load_pretrained",
    "register_builder",
    "register_fairseq_converter",
    "save_checkpoint",
    "wav2vec2_base",
    "wav2vec2_large",
    "wav2vec2_large_lv60k",
    "wav2vec2_small",
    "wav2vec2_tiny",
    "wavlm_base",
    "wavlm_small",
    "wavlm_tiny",
]

# wav2vec 1.0 and vq-wav2vec (convolutional context networks); importing them also registers their
# checkpoint kinds ("wav2vec", "vq_wav2vec") and the fairseq "wav2vec" converter with load_pretrained.
from w2v.models.vq_wav2vec import (  # noqa: E402
    VqWav2VecConfig,
    VqWav2VecModel,
    vq_wav2vec_base,
    vq_wav2vec_model,
    vq_wav2vec_tiny,
)
from w2v.models.wav2vec import (  # noqa: E402
    Wav2VecConfig,
    Wav2VecModel,
    wav2vec_base,
    wav2vec_large,
    wav2vec_model,
    wav2vec_tiny,
)

__all__ += [
    "VqWav2VecConfig",
    "VqWav2VecModel",
    "Wav2VecConfig",
    "Wav2VecModel",
    "vq_wav2vec_base",
    "vq_wav2vec_model",
    "vq_wav2vec_tiny",
    "wav2vec_base",
    "wav2vec_large",
    "wav2vec_model",
    "wav2vec_tiny",
]
