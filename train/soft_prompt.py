"""Soft prompts (peft prompt tuning and P-tuning) run with explicit positions, for training and scoring.

peft's own forward for prompt learning prepends the virtual tokens' embeddings to every row and drops
``position_ids`` (it warns "Position ids are not supported ... Ignoring"), so the model numbers the
positions 0, 1, ... over the whole row. That is right for right-padded rows, and wrong for

* packed rows: one soft prompt for several examples, which then attend to each other (the
  ``prompt_tuning`` kind refuses ``batching: packed``);
* the evaluation's left-padded rows: padding would sit between the virtual tokens and the text and
  shift every position;
* the evaluation's shared-prefix KV cache: the cached prefix would hold no virtual tokens, or
  peft would prepend them again after it;
* ``logits_to_keep`` given as a mask over the text (the training loss): it no longer lines up.

:class:`SoftPrompted` runs the base model itself, with the same virtual tokens (``get_prompt``) at
positions ``0..n-1`` and the text at ``n + its own positions``: exactly peft's training forward for an
unpadded row, whatever the padding, and a cache built through it starts with the virtual tokens, so
the shared prefix the evaluation computes once is "virtual tokens + the text every question starts
with". ``tests/test_kinds_train.py`` checks its scores against peft's plain forward of each question.
"""

from __future__ import annotations

import typing as tp

import torch

from launch.spec.config import PromptTuningSettings


def peft_config(settings: PromptTuningSettings, tokenizer_path: str) -> tp.Any:
    """peft's ``PromptTuningConfig`` (``style: prompt_tuning``) or ``PromptEncoderConfig`` (``p_tuning``)."""
    from peft import PromptEncoderConfig, PromptTuningConfig, PromptTuningInit

    if settings.style == "p_tuning":
        return PromptEncoderConfig(
            task_type="CAUSAL_LM",
            num_virtual_tokens=settings.num_virtual_tokens,
            encoder_hidden_size=settings.encoder_hidden_size,
            encoder_reparameterization_type="MLP",
        )
    init = {"text": PromptTuningInit.TEXT, "sample_vocab": PromptTuningInit.SAMPLE_VOCAB}
    text = settings.init == "text"
    return PromptTuningConfig(
        task_type="CAUSAL_LM",
        num_virtual_tokens=settings.num_virtual_tokens,
        prompt_tuning_init=init.get(settings.init, PromptTuningInit.RANDOM),
        prompt_tuning_init_text=settings.init_text if text else None,
        tokenizer_name_or_path=tokenizer_path if text else None,
    )


class SoftPrompted(torch.nn.Module):
    """A peft prompt-learning model (``PeftModelForCausalLM``) called like a causal LM, positions kept.

    Parameters
    ----------
    peft_model:
        The model ``get_peft_model`` or ``PeftModel.from_pretrained`` made; trained in place, saved
        as itself (``save_pretrained`` writes the adapter).
    """

    def __init__(self, peft_model: tp.Any) -> None:
        super().__init__()
        self.peft_model = peft_model
        self.n_virtual = int(peft_model.active_peft_config.num_virtual_tokens)

    @property
    def base(self) -> tp.Any:
        return self.peft_model.get_base_model()

    @property
    def config(self) -> tp.Any:
        return self.base.config

    def get_output_embeddings(self) -> tp.Any:
        return self.base.get_output_embeddings()

    def generate(self, **kwargs: tp.Any) -> torch.Tensor:
        """peft's generation (it positions a left-padded row from its attention mask, virtual tokens first)."""
        return self.peft_model.generate(**kwargs)

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        position_ids: torch.Tensor | None = None,
        past_key_values: tp.Any = None,
        logits_to_keep: int | torch.Tensor = 0,
        **kwargs: tp.Any,
    ) -> tp.Any:
        """The base model's forward over ``[virtual tokens] + input_ids``.

        Without a cache (or an empty one) the virtual tokens come first, at positions ``0..n-1``; the
        text follows at ``n + position_ids`` (``0..T-1`` when not given: unpadded or right-padded rows).
        With a non-empty cache, which only this forward builds, the cache already starts with them:
        the text only moves ``n`` positions on. The attention mask, when given, covers the text
        (and the cached text): the virtual tokens' ``n`` ones are added in front.
        """
        rows, width = input_ids.shape
        n = self.n_virtual
        embeds = self.base.get_input_embeddings()(input_ids)
        if position_ids is None:
            position_ids = torch.arange(width, device=input_ids.device).expand(rows, width)
        position_ids = position_ids + n
        if past_key_values is None or past_key_values.get_seq_length() == 0:
            prompts = self.peft_model.get_prompt(batch_size=rows).to(device=embeds.device, dtype=embeds.dtype)
            embeds = torch.cat([prompts, embeds], dim=1)
            virtual = torch.arange(n, device=input_ids.device).expand(rows, n)
            position_ids = torch.cat([virtual, position_ids], dim=1)
            if isinstance(logits_to_keep, torch.Tensor) and logits_to_keep.dtype == torch.bool:
                logits_to_keep = torch.cat([logits_to_keep.new_zeros(rows, n), logits_to_keep], dim=1)
        if attention_mask is not None:
            attention_mask = torch.cat([attention_mask.new_ones(rows, n), attention_mask], dim=1)
        return self.base(
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            position_ids=position_ids,
            past_key_values=past_key_values,
            logits_to_keep=logits_to_keep,
            **kwargs,
        )
