"""Tiny randomly initialised models for tests (no downloads): configs shared by test modules."""

import pytest
import torch

# A ~1.6 M-parameter open_clip ViT (mostly the 49408-token embedding the default BPE tokenizer
# needs). vision head_width must divide width: heads = width // head_width (default 64 -> 0 heads).
TINY_OPEN_CLIP = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16, "patch_size": 16},
    "text_cfg": {"context_length": 16, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


CN_VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *"一只猫狗在草地上的红色汽车和", "a", "cat", "dog", "on",
            "the", "grass", "red", "car", "photo", "of", "##s"]


def tiny_cn_clip_dir(root, image_processor_kwargs=None):
    """A tiny ChineseCLIP (BERT 1 layer / ViT 1 layer, 32 wide, projection 16) saved like a hub snapshot."""
    transformers = pytest.importorskip("transformers")
    root.mkdir(parents=True, exist_ok=True)
    (root / "vocab.txt").write_text("\n".join(CN_VOCAB) + "\n", encoding="utf-8")
    config = transformers.ChineseCLIPConfig(
        text_config=dict(vocab_size=len(CN_VOCAB), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, max_position_embeddings=64),
        vision_config=dict(image_size=32, patch_size=16, hidden_size=32, intermediate_size=64,
                           num_hidden_layers=1, num_attention_heads=2),
        projection_dim=16,
    )
    torch.manual_seed(0)
    transformers.ChineseCLIPModel(config).save_pretrained(root)
    # v5 pitfall: BertTokenizer(vocab_file=...) silently ignores the file; from_pretrained reads it.
    tok = transformers.BertTokenizer.from_pretrained(root, local_files_only=True)
    kw = image_processor_kwargs or dict(size={"height": 32, "width": 32}, do_center_crop=False)  # OFA-Sys: squash
    ip = transformers.ChineseCLIPImageProcessor(**kw)
    transformers.ChineseCLIPProcessor(image_processor=ip, tokenizer=tok).save_pretrained(root)
    return root
