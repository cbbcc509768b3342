"""What ThinkPrune did to a model's reasoning, from evaluation run directories (``python -m verl_thinkprune.analysis``).

keywords: hesitation and self-correction words per 1,000 tokens; plots: length histograms and accuracy against mean
length; perplexity: readability of the reasoning under a reference model; judge: reasoning-behaviour breakdown by an
LLM judge behind any OpenAI-compatible endpoint.
"""
