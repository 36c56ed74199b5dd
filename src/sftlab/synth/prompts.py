"""Every prompt sent to a teacher or judge, in one place, with a version hash recorded in each
generated row's meta (`prompt_hash`): rows made with different prompt wording are told apart."""

from __future__ import annotations

import hashlib

# ---- Self-Instruct (Wang et al. 2022), phrased for chat models ---------------------------------
SELF_INSTRUCT = """You are asked to come up with a set of {n} diverse task instructions. Here are some examples:

{examples}

Requirements:
1. Try not to repeat the verb for each instruction, to maximize diversity.
2. The language used for the instructions should be diverse too.
3. The type of instructions should be diverse: open-ended generation, classification, editing, math, coding, reasoning, and so on.
4. A language model must be able to complete each instruction: do not ask for images, audio, files or actions in the world.
5. Each instruction is self-contained, one or two sentences, in English. If it needs an input, include the input in the instruction.

Write {n} new tasks, numbered from Task {start} to Task {end}, one per line, as "Task N: <instruction>"."""

# ---- Evol-Instruct (WizardLM, Xu et al. 2023) -------------------------------------------------
EVOL_DEPTH = """I want you act as a Prompt Rewriter.
Your objective is to rewrite a given prompt into a more complex version to make those famous AI systems (e.g., chatgpt and GPT4) a bit harder to handle.
But the rewritten prompt must be reasonable and must be understood and responded by humans.
Your rewriting cannot omit the non-text parts such as the table and code in #The Given Prompt#:. Also, please do not omit the input in #The Given Prompt#.
You SHOULD complicate the given prompt using the following method:
{method}
You should try your best not to make the #Rewritten Prompt# become verbose, #Rewritten Prompt# can only add 10 to 20 words into #The Given Prompt#.
'#The Given Prompt#', '#Rewritten Prompt#', 'given prompt' and 'rewritten prompt' are not allowed to appear in #Rewritten Prompt#
#The Given Prompt#:
{instruction}
#Rewritten Prompt#:
"""

EVOL_METHODS = {
    "constraints": "Please add one more constraints/requirements into #The Given Prompt#",
    "deepen": "If #The Given Prompt# contains inquiries about certain issues, the depth and breadth of the inquiry can be increased.",
    "concretizing": "Please replace general concepts with more specific concepts.",
    "reasoning": "If #The Given Prompt# can be solved with just a few simple thinking processes, you can rewrite it to explicitly request multiple-step reasoning.",
    "complicate_input": "Please add a concrete input to #The Given Prompt# that makes it harder, such as a table, a piece of code, "
                        "a JSON object, a formula or a longer text to work on, and refer to it in the prompt.",
}

EVOL_BREADTH = """I want you act as a Prompt Creator.
Your goal is to draw inspiration from the #Given Prompt# to create a brand new prompt.
This new prompt should belong to the same domain as the #Given Prompt# but be even more rare.
The LENGTH and complexity of the #Created Prompt# should be similar to that of the #Given Prompt#.
The #Created Prompt# must be reasonable and must be understood and responded by humans.
'#Given Prompt#', '#Created Prompt#', 'given prompt' and 'created prompt' are not allowed to appear in #Created Prompt#
#Given Prompt#:
{instruction}
#Created Prompt#:
"""

# WizardLM's elimination rule 1: does the evolved instruction add information over its parent?
EVOL_EQUAL = """Here are two Instructions to ChatGPT AI, do you think they are equal to each other, which meet the following requirements:
1. They have same constraints and requirements.
2. They have same depth and breadth of the inquiry.
The First Prompt: {parent}
The Second Prompt: {child}
Your Judgement (Just answer: Equal or Not Equal. No need to explain the reason.):"""

# ---- Judges -----------------------------------------------------------------------------------
# AlpaGasus (Chen et al. 2023) rating prompt, on the 1-5 scale.
JUDGE_SCORE = """We would like to request your feedback on the performance of an AI assistant in response to the instruction displayed below.

Instruction: {instruction}

Response: {response}

Please rate according to the accuracy and helpfulness of the response to the instruction. The assistant receives a score on a scale of 1 to 5, where a higher score indicates a better response. Please first output a single line containing only the score, as "Score: N". In the subsequent line, please provide a short explanation of your evaluation, avoiding any potential bias."""

# MT-Bench (Zheng et al. 2023) single-answer grading, 1-10.
JUDGE_SINGLE = """[Instruction]
Please act as an impartial judge and evaluate the quality of the response provided by an AI assistant to the user question displayed below. Your evaluation should consider factors such as the helpfulness, relevance, accuracy, depth, creativity, and level of detail of the response. Begin your evaluation by providing a short explanation. Be as objective as possible. After providing your explanation, you must rate the response on a scale of 1 to 10 by strictly following this format: "[[rating]]", for example: "Rating: [[5]]".

[Question]
{question}

[The Start of Assistant's Answer]
{answer}
[The End of Assistant's Answer]"""

# MT-Bench pairwise comparison, ties allowed.
JUDGE_PAIR = """[System]
Please act as an impartial judge and evaluate the quality of the responses provided by two AI assistants to the user question displayed below. You should choose the assistant that follows the user's instructions and answers the user's question better. Your evaluation should consider factors such as the helpfulness, relevance, accuracy, depth, creativity, and level of detail of their responses. Begin your evaluation by comparing the two responses and provide a short explanation. Avoid any position biases and ensure that the order in which the responses were presented does not influence your decision. Do not allow the length of the responses to influence your evaluation. Be as objective as possible. After providing your explanation, output your final verdict by strictly following this format: "[[A]]" if assistant A is better, "[[B]]" if assistant B is better, and "[[C]]" for a tie.

[User Question]
{question}

[The Start of Assistant A's Answer]
{answer_a}
[The End of Assistant A's Answer]

[The Start of Assistant B's Answer]
{answer_b}
[The End of Assistant B's Answer]"""

# Forced answer prefixes for log-prob judging (judge method `logprobs`, synth/choices.py): each is
# the start of the answer format its prompt asks for, so the scored choice continues it exactly.
SCORE_PREFIX = "Score: "  # JUDGE_SCORE: "Score: N", N in 1..5
PAIR_PREFIX, PAIR_SUFFIX = "[[", "]]"  # JUDGE_PAIR: "[[A]]", "[[B]]", "[[C]]"
RATING_PREFIX, RATING_SUFFIX = "Rating: [[", "]]"  # JUDGE_SINGLE: "Rating: [[N]]", N in 1..10


def prompt_hash(*templates: str) -> str:
    """Short, stable version id of the prompt text(s) a row was made with."""
    return hashlib.sha1("\n\x00".join(templates).encode("utf-8")).hexdigest()[:10]
