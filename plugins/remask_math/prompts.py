"""Prompt templates of d1 (dllm-reasoning/d1), reproduced verbatim for paper parity.

d1 trains with one user message ``SYSTEM_PROMPT + "\\n\\n" + question`` and no pre-fill
(``diffu-grpo/data_utils.py``); it evaluates with a different instruction that asks for ``\\boxed{}``
inside ``<answer>`` and pre-fills the assistant turn with ``"<reasoning>"`` (``eval/*.py``).
The strings below are the templates' exact text (whitespace included): changing one changes the
prompt distribution the paper numbers were measured on.
"""

from __future__ import annotations

from typing import Literal

#: d1 training instruction (GSM8K, countdown, MATH training prompts start with it)
TRAIN_FORMAT_PROMPT = """
Respond in the following format:
<reasoning>
...
</reasoning>
<answer>
...
</answer>
"""

#: d1 sudoku instruction (the same text is used for training and evaluation)
SUDOKU_PROMPT = """
Please solve the following 4x4 Sudoku puzzle. The puzzle is provided as a 16-character string reading left-to-right, top-to-bottom, where '0' represents empty cells.

Rules:
- Fill empty cells with digits 1-4
- Each row must contain digits 1-4 exactly once
- Each column must contain digits 1-4 exactly once
- Each 2x2 box must contain digits 1-4 exactly once

Important: Your solution must be a COMPLETE 16-character string with only the digits 1-4, representing your final solved grid.

Respond in this exact format:
<reasoning>
Your step-by-step solving process
</reasoning>
<answer>
[16-character solution string with no spaces or separators]
</answer>
"""

#: d1 GSM8K evaluation instruction (note the trailing space after "\boxed{}.")
GSM8K_EVAL_PROMPT = (
    "You are a math expert. You will be given a question to solve. Solve it step by step. "
    "Wrap the final answer in a \\boxed{}. \n"
    "Respond in the following format:\n<reasoning>\nYour reasoning here\n</reasoning>\n"
    "<answer>\n\\boxed{...}\n</answer>"
)

#: d1 MATH-500 evaluation instruction (the stray quote and newline are d1's)
MATH500_EVAL_PROMPT = (
    "You are a math expert. You will be given a question to solve. Solve it step by step. "
    "Wrap the final answer in a \\boxed{}.\n"
    "Respond in the following format:\n<reasoning>\nYour reasoning here\n</reasoning>\n"
    "<answer>\n\\boxed{...}\n</answer>\" \n"
)

#: d1 MATH training instruction that follows TRAIN_FORMAT_PROMPT
MATH_TRAIN_INSTRUCTION = (
    "You are a math expert. You will be given a question to solve. Solve it step by step. "
    "Wrap the final answer in a \\boxed{}. "
)

#: d1 countdown evaluation instruction (no newline before "Respond", as in d1)
COUNTDOWN_EVAL_PROMPT = (
    "Using only the provided numbers, create an arithmetic expression that evaluates to exactly the "
    "provided target number. You may use the operations +, -, *, and / as needed, but each number "
    "must be used exactly once. Think step-by-step. After reasoning, provide only your final "
    "expression inside \\boxed{} tags without including an equals sign or the target number. "
    "For example: \\boxed{a + b * c}"
    "Respond in the following format:\n<reasoning>\nYour reasoning here\n</reasoning>\n"
    "<answer>\n\\boxed{...}\n</answer>"
)

#: the assistant pre-fill d1 uses at evaluation time
REASONING_PREFILL = "<reasoning>"

Template = Literal["auto", "d1-train", "d1-eval"]


def resolve_template(template: str, split: str) -> str:
    """``auto`` means d1's own choice: training prompts for ``train``, eval prompts otherwise."""
    if template == "auto":
        return "d1-train" if split == "train" else "d1-eval"
    return template


def user_message(content: str) -> tuple[dict[str, str], ...]:
    """d1 puts every instruction in one user message (no system role)."""
    return ({"role": "user", "content": content},)


def countdown_train_question(numbers: list[int], target: int) -> str:
    """d1's countdown training prompt (everything after TRAIN_FORMAT_PROMPT)."""
    return (
        f"Using only the numbers {numbers}, create an arithmetic expression that evaluates to exactly "
        f"{target}. You must use all numbers from the list, and each number must be used exactly once. "
        "You may use the operations +, -, *, and / as needed. After reasoning, provide only your final "
        "expression inside <answer></answer> tags without including an equals sign or the target "
        "number. For example, if the numbers are [2, 3, 4] and the target is 5, a valid answer is: "
        "<answer>\n2*4-3\n</answer>"
    )


def xml_completion(reasoning: str, answer: str, *, prefilled: bool) -> str:
    """An SFT target in d1's format; without the opening tag when the prompt pre-fills it."""
    body = f"\n{reasoning}\n</reasoning>\n<answer>\n{answer}\n</answer>"
    return body if prefilled else REASONING_PREFILL + body
