/** GGUF tokenizer.ggml.token_type values (llama.cpp's llama_token_type; SentencePiece's piece types share them). */
export const TOKEN_TYPES = { undefined: 0, normal: 1, unknown: 2, control: 3, userDefined: 4, unused: 5, byte: 6 } as const;
