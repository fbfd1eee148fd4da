// The text tokenizer tests compare tokenizers on.

/** Code, emoji (ZWJ sequences, flags), CJK, other scripts, whitespace runs, digits, contractions. */
export const MULTILINGUAL = [
  "Hello world! The quick brown fox — jumps over 1234567 lazy dogs. I've, you're, HE'LL, they'D",
  'function add(a, b) {\n    return a + b; // sum\n}\n\n\n\tconst x = [1, 2, 3].map((v) => v ** 2);\r\n',
  '🚀 emoji 😶‍🌫️ family 👨‍👩‍👧‍👦 flag 🇫🇷 ✅ 🦙🦙 café naïve Å',
  '中文测试：我想在apple工作1314151天～。日本語のテキスト、カタカナ。한국어 텍스트',
  'Ελληνικά, русский текст, العربية, עברית, हिन्दी, ภาษาไทย, Tiếng Việt, ქართული',
  '   leading spaces\n\n\n    and     runs   of\t\t whitespace   \u00a0\u3000 trailing   ',
  "''''''```````\"\"\"\"......!!!!!!?????? 3.14159 1e-9 0x1F 100,000,000 $5.00 ¼ ½",
].join('\n');
