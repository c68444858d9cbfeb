"""LRCN: per-frame CNN -> LSTM (fc6 / fc7 variants), the single-frame baseline, factored and unfactored
captioning; the defining properties (causal recurrence, order-invariant baseline, visual input only in
the factored model's upper LSTM), greedy decoding and a short fit on Moving-MNIST clips."""

import pytest
import torch

from panconv_vision.datasets.digits import MNIST
from panconv_vision.datasets.video import EOS, PAD, MovingMNIST, detokenize
from panconv_vision.models.lrcn import LRCNActivity, LRCNCaption

TINY = dict(widths=(4, 8), fc_dim=16, hidden=12, dropout=0.0)


def test_lstm_reads_fc6_or_fc7_and_predictions_average_the_steps():
    torch.manual_seed(0)
    fc6, fc7 = LRCNActivity(5, **TINY), LRCNActivity(5, lstm_input="fc7", **TINY)
    assert fc6.cnn.fc7 is None and fc7.cnn.fc7 is not None           # the fc6 variant drops fc7
    x = torch.randn(2, 4, 1, 32, 32)
    scores = fc6({"inputs": x})
    assert scores.shape == (2, 4, 5)
    torch.testing.assert_close(fc6.predict(scores), scores.softmax(-1).mean(1))
    loss = fc6.loss(scores, {"labels": torch.tensor([1, 3])})["loss"]
    want = torch.nn.functional.cross_entropy(scores.reshape(8, 5), torch.tensor([1, 1, 1, 1, 3, 3, 3, 3]))
    torch.testing.assert_close(loss, want)


def test_lrcn_is_causal_and_the_single_frame_baseline_ignores_frame_order():
    torch.manual_seed(0)
    lrcn, single = LRCNActivity(4, **TINY).eval(), LRCNActivity(4, recurrent=False, **TINY).eval()
    x = torch.randn(1, 5, 1, 32, 32)
    y = x.clone()
    y[:, 3:] = torch.randn(1, 2, 1, 32, 32)                           # change the future only
    torch.testing.assert_close(lrcn({"inputs": y})[:, :3], lrcn({"inputs": x})[:, :3])
    assert not torch.allclose(lrcn({"inputs": y})[:, 3:], lrcn({"inputs": x})[:, 3:])
    flipped = x.flip(1)
    torch.testing.assert_close(single.predict(single({"inputs": flipped})), single.predict(single({"inputs": x})))
    assert not torch.allclose(lrcn.predict(lrcn({"inputs": flipped})), lrcn.predict(lrcn({"inputs": x})))


def test_factored_decoder_feeds_the_visual_feature_only_to_the_upper_lstm():
    torch.manual_seed(0)
    factored, unfactored = LRCNCaption(10, 6, **TINY).eval(), LRCNCaption(10, 6, factored=False, **TINY).eval()
    assert factored.language.input_size == factored.embed.embedding_dim                  # words only
    assert factored.multimodal.input_size == 2 * factored.encoder.hidden_size           # [lower state, visual]
    assert unfactored.multimodal.input_size == unfactored.embed.embedding_dim + unfactored.encoder.hidden_size
    assert not hasattr(unfactored, "language")
    words = torch.tensor([[1, 4, 5, 6]])
    lang, _ = factored.language(factored.embed(words))
    a, _ = factored._decode(words, torch.randn(1, 12))
    b, _ = factored._decode(words, torch.randn(1, 12))
    assert not torch.allclose(a, b)                                  # the visual feature matters ...
    lang2, _ = factored.language(factored.embed(words))
    torch.testing.assert_close(lang, lang2)                          # ... but never enters the word LSTM


def test_teacher_forcing_loss_ignores_padding_and_greedy_decoding_stops_at_eos():
    torch.manual_seed(0)
    model = LRCNCaption(10, 6, **TINY).eval()
    captions = torch.tensor([[1, 4, 5, EOS, PAD, PAD], [1, 7, 8, 9, 3, EOS]])
    out = model({"inputs": torch.randn(2, 3, 1, 32, 32), "captions": captions})
    assert out["logits"].shape == (2, 5, 10)
    target = captions[:, 1:]
    keep = target != PAD
    want = torch.nn.functional.cross_entropy(out["logits"][keep], target[keep])
    torch.testing.assert_close(model.loss(out, {"captions": captions})["loss"], want)
    with torch.no_grad():                                            # force <eos> as the first word
        model.out.bias.zero_()
        model.out.bias[EOS] = 100.0
    tokens = model.predict(out)
    assert tokens.tolist() == [[1, EOS, PAD, PAD, PAD, PAD]] * 2


def test_bad_clip_shape_raises_value_error():
    with pytest.raises(ValueError, match=r"expected a clip \(N, T, 1, H, W\)"):
        LRCNActivity(3, **TINY)({"inputs": torch.randn(2, 1, 32, 32)})
    with pytest.raises(ValueError, match="lstm_input"):
        LRCNActivity(3, lstm_input="fc8", **TINY)


def test_lrcn_and_the_captioner_fit_a_handful_of_moving_mnist_clips(tmp_path):
    torch.manual_seed(0)
    data = MovingMNIST(file=MNIST.example(tmp_path)["file"], length=8, frames=4, size=32, speed_min=0.8,
                       speed_max=1.2)
    batch = torch.utils.data.default_collate([data[i] for i in range(8)])
    for model in (LRCNActivity(8, **TINY), LRCNCaption(len(data.metadata) and data.metadata["vocab_size"],
                                                       data.max_caption_length, **TINY)):
        opt = torch.optim.Adam(model.parameters(), lr=0.01)
        first = None
        for _ in range(80):
            loss = model.loss(model(batch), batch)["loss"]
            first = float(loss) if first is None else first
            opt.zero_grad()
            loss.backward()
            opt.step()
        assert float(loss) < 0.7 * first, (type(model).__name__, first, float(loss))
    model.eval()
    text = detokenize(model.predict(model(batch))[0])
    assert text.startswith("the digit")
