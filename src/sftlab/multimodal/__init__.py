"""Multimodal (LLaVA-style) instruction tuning: images in conversations.

    images.py   image references -> PIL images (local paths, file:// and data: URLs, http(s) URLs
                downloaded once into the cache), and the checks the data loader runs on each one

A `Conversation` holds its images as references (`Conversation.images`), one per `<image>`
placeholder in its messages' text; see sftlab.data.formats for the input shapes that load as one.
Nothing here is imported by the text-only path.
"""
