"""Stage 3: LoRA fine-tuning examples and training (serving adapters is an LLM backend: dualrec.llm.peft_backend)."""
