"""Integrations with other serving engines: `hyperpeft.integrations.vllm` (a LoRA resolver plugin for vLLM)."""
