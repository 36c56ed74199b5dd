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

# ---- LLaVA-style visual instruction data (Liu et al. 2023, "Visual Instruction Tuning") ---------
# A text-only teacher sees an image only through its captions and object boxes and writes as if it
# saw the image. Our wording; the structure follows the paper: one system message per data type, one
# worked example (context -> answer) as a user/assistant exchange, then the image's context.
LLAVA_SYSTEM = """You are an AI visual assistant looking at one image. You are not shown the pixels; instead you are told what the image shows: a few captions, each describing the same image, and, when available, a list of the objects in it with their bounding boxes. A box is written as label: [x0, y0, x1, y1], coordinates normalised to the range 0-1, (0, 0) being the top-left corner of the image, x growing to the right and y downwards. Write as someone who is looking at the image itself: never mention captions, boxes or coordinates, and do not invent details they do not support."""

LLAVA_TASKS = {
    "conversation": """Your task: write a conversation between you and a person who asks you about this image (the person sees it too).
- Ask varied questions: which objects there are, how many of them, what people or animals are doing, where things are, how they are placed relative to each other, colours, the setting.
- Ask only questions whose answer the image settles for certain: skip anything the captions and objects leave open.
- Use the object positions to say where things are (left, right, top, in front of, next to), never as numbers.
- Answer as a helpful assistant that sees the image: complete sentences, short and exact.
Write {min_turns} to {max_turns} question-answer pairs in exactly this format and nothing else:
Question: <question>
Answer: <answer>
Question: <question>
Answer: <answer>""",
    "detail": """Your task: describe the image in one rich, detailed paragraph, as someone looking at it: the scene and setting, the main objects, people and animals, how many there are, what they look like and what they are doing, and where they are relative to each other (use the object positions: left, right, foreground, background, next to, behind). Write only the description, no title and no introduction.""",
    "reasoning": """Your task: ask one question about this image that takes reasoning to answer, not one whose answer is simply visible: why something is happening, what it tells about the place, time or people, what may happen next, what someone in the scene should do, or what background knowledge explains it. Then answer it step by step, starting from what the image shows and reasoning to the conclusion. The question must be answerable from the image and common knowledge.
Write exactly this format and nothing else:
Question: <question>
Answer: <step-by-step answer>""",
}

# The worked example shown before every request (few_shot: true).
LLAVA_EXAMPLE_CONTEXT = """Captions:
- Two children fly a red kite on a grassy hill.
- A boy and a girl play with a kite in an open park on a windy day.
- A kite high in the air above two kids standing on green grass.
Objects:
- person: [0.210, 0.520, 0.330, 0.910]
- person: [0.400, 0.550, 0.490, 0.900]
- kite: [0.620, 0.080, 0.720, 0.230]"""

LLAVA_EXAMPLES = {
    "conversation": """Question: How many children are in the image?
Answer: There are two children, a boy and a girl, standing on a grassy hill.
Question: What are they doing?
Answer: They are flying a red kite together.
Question: Where is the kite compared with the children?
Answer: The kite is high up in the sky, above and to the right of the children.
Question: What is the ground like?
Answer: The ground is a green, grassy hill in an open park.""",
    "detail": """The image shows two children, a boy and a girl, standing close to each other on a green, grassy hill in an open park on a windy day. They are flying a bright red kite, which floats high in the sky in the upper right part of the picture, far above their heads. The children stand in the lower left half of the scene, side by side, with the kite's line reaching up and away from them. Apart from the two of them and the kite, the view is open: grass below and sky above, with plenty of room for the kite to fly.""",
    "reasoning": """Question: Why are the weather and the place good for what the children are doing?
Answer: The children are flying a kite, and a kite needs a steady wind to stay up. The kite is high in the air, which shows there is enough wind today. The hill is open grass with nothing nearby that the line could catch on or that would block the wind. Standing on a hill also puts them higher up, where the wind is usually stronger. So the windy day and the open hill make it a good time and place to fly a kite.""",
}

LLAVA_CONTEXT_NOTE = "Write about this image:"

# The user turn of a detailed-description row (the teacher never sees these): one per row, drawn
# per (image, sample) so the student does not learn a single fixed trigger phrase.
LLAVA_DETAIL_INSTRUCTIONS = (
    "Describe the image in detail.",
    "What is going on in this picture? Describe it thoroughly.",
    "Give a detailed description of this image.",
    "Walk me through everything you can see in this image.",
    "Write a thorough description of the scene in the image.",
    "Explain in detail what this picture shows.",
    "Describe this image carefully, including the objects in it and where they are.",
    "What do you see in this image? Please be detailed.",
)
