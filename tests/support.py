"""Shared test inputs: small configurations, sentence lists and tiny model builders.

Not a test module: every test module imports what it shares from here (``pythonpath`` in
pyproject.toml puts this folder on the path), never from another test module.
"""

from __future__ import annotations

from dataclasses import replace

from alignnb.agents.recipes import AgentConfig, TrainConfig

#: The study's four levels, in notebook order.
LEVELS = ["BabyAI-GoToLocal-v0", "BabyAI-PickupLoc-v0", "BabyAI-OpenDoorLoc-v0", "BabyAI-PutNextLocal-v0"]

#: A transformer agent small enough to train in seconds.
SMALL = AgentConfig(d_model=32, n_layers=1, n_heads=2, d_ff=64, cell_dim=8, channels=16, d_hidden=32, memory_layers=1)

#: Instructions of the four levels, for the agents' tests.
AGENT_SENTENCES = ["go to the red ball", "pick up a key behind you", "put the blue box next to the grey key",
                   "open the door"]

def make_agent(cfg=SMALL, seed: int = 0, sentences=AGENT_SENTENCES):
    """A fresh agent of ``cfg``'s learner with its parameters perturbed, so that conditioning
    matters (FiLM starts at identity), in eval mode."""
    import torch

    from alignnb.agents.blocks import Vocabulary
    from alignnb.agents.learners import build_agent

    torch.manual_seed(seed)
    agent = build_agent(Vocabulary.from_sentences(sentences), cfg)
    with torch.no_grad():
        for p in agent.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return agent.eval()


#: A short training recipe with success checks and the stopping rule (200 steps at most).
CHECKED_RECIPE = replace(TrainConfig(), steps=200, batch_episodes=16, warmup=5, val_every=10, check_every=10,
                         check_episodes=3, min_steps=20, goal_checks=2, checkpoint_every=10)

ENCODER_SENTENCES = ["go to the red ball", "pick up a key", "put the blue box next to the grey key on your left",
             "open the door", "go to a ball"]
WORDS = sorted({w for s in ENCODER_SENTENCES for w in s.split()} | {"green", "purple"})


def word_tokenizer(kind: str):
    """A tiny word-level fast tokenizer: BERT-style ([CLS] .. [SEP]), decoder (<s> ..) or CLIP (.. </s>)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    specials = ["<pad>", "<unk>", "<s>", "</s>", "[CLS]", "[SEP]"]
    vocab = {w: i for i, w in enumerate(specials + WORDS)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    template = {"bert": "[CLS] $A [SEP]", "decoder": "<s> $A", "clip": "<s> $A </s>"}[kind]
    tok.post_processor = processors.TemplateProcessing(
        single=template, special_tokens=[(t, vocab[t]) for t in specials if t in template])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
                                   eos_token="</s>", cls_token="[CLS]", sep_token="[SEP]")


def tiny(kind: str):
    """(config-built random model, tokenizer kind, arch) for each supported family."""
    import transformers as tf

    v = 6 + len(WORDS)
    common = dict(vocab_size=v, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
    if kind == "llama":
        return tf.LlamaModel(tf.LlamaConfig(**common, num_key_value_heads=2, bos_token_id=2, eos_token_id=3,
                                            pad_token_id=0)), "decoder", "auto"
    if kind == "qwen2":
        return tf.Qwen2Model(tf.Qwen2Config(**common, num_key_value_heads=2, bos_token_id=2, eos_token_id=3,
                                            pad_token_id=0)), "decoder", "auto"
    if kind == "gemma3":
        return tf.Gemma3TextModel(tf.Gemma3TextConfig(**common, num_key_value_heads=2, head_dim=8, bos_token_id=2,
                                                      eos_token_id=3, pad_token_id=0, sliding_window=64)), "decoder", "auto"
    if kind == "bert":
        return tf.BertModel(tf.BertConfig(**common, pad_token_id=0)), "bert", "auto"
    if kind == "clip":
        text = dict(vocab_size=v, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                    eos_token_id=3, bos_token_id=2, pad_token_id=0)
        vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                      image_size=32, patch_size=16)
        return tf.CLIPModel(tf.CLIPConfig(text_config=text, vision_config=vision, projection_dim=16)), "clip", "clip"
    if kind == "blip":
        text = dict(vocab_size=v, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4,
                    encoder_hidden_size=32, pad_token_id=0, bos_token_id=2, sep_token_id=5)
        vision = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=4,
                      image_size=32, patch_size=16)
        return tf.BlipForImageTextRetrieval(tf.BlipConfig(text_config=text, vision_config=vision,
                                                          image_text_hidden_size=16)), "bert", "blip"
    raise ValueError(kind)
