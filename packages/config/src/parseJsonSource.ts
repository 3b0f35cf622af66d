/**
 * A strict JSON parser (RFC 8259) that remembers where everything was written.
 *
 * Why our own: `JSON.parse` reports neither positions of values nor duplicate keys (the last one
 * silently wins), and its syntax messages are byte offsets. Every later config problem must name
 * `file:line:column`, so this parser records, for every value and every object key, its JSON path
 * and its position. Nothing beyond RFC 8259 is accepted: no comments, no trailing commas, no single
 * quotes, no NaN. A leading UTF-8 byte order mark is skipped.
 *
 * Vocabulary: `offset` is an index into the text; a `position` is a 1-based line and column
 * (columns count UTF-16 code units). Line breaks are LF, CRLF or a lone CR.
 *
 * A syntax error stops the parse (what follows cannot be trusted); duplicate keys do not, so every
 * duplicate of the document is reported together, with a syntax error found after them.
 */
import {ErrorCodes, InputError, type Problem} from "@mixz/protocol";
import {type JsonPath, type JsonPathSegment, formatJsonPath, jsonPathKey} from "./jsonPath.js";
import {JsonSource, type JsonValue, type SourcePosition} from "./JsonSource.js";

export interface ParseJsonOptions {
    /** Named in every problem. */
    readonly file?: string;
    /** Deepest nesting of arrays and objects accepted (default 512): deeper input is an error, not a stack overflow. */
    readonly maxDepth?: number;
}

const defaultMaxDepth = 512;

/** Thrown inside the parser to unwind to `parseJsonSource`, which turns it into an InputError. */
class SyntaxFailure {
    readonly problem: Problem;
    constructor(problem: Problem) {
        this.problem = problem;
    }
}

/**
 * Parses `text` as one JSON document. Throws InputError (codes `configSyntax` and
 * `configDuplicateKey`) naming line and column of every problem found.
 */
export function parseJsonSource(text: string, options: ParseJsonOptions = {}): JsonSource {
    const parser = new Parser(text, options);
    return parser.parseDocument();
}

class Parser {
    private readonly text: string;
    private readonly file: string | undefined;
    private readonly maxDepth: number;
    private offset = 0;
    private line = 1;
    private lineStart = 0;
    private readonly valuePositions = new Map<string, SourcePosition>();
    private readonly keyPositions = new Map<string, SourcePosition>();
    private readonly duplicates: Problem[] = [];

    constructor(text: string, options: ParseJsonOptions) {
        this.text = text;
        this.file = options.file;
        this.maxDepth = options.maxDepth ?? defaultMaxDepth;
    }

    parseDocument(): JsonSource {
        try {
            if (this.text.charCodeAt(0) === 0xfeff) {
                // The byte order mark is not part of the document, and no column of line 1.
                this.offset = 1;
                this.lineStart = 1;
            }
            this.skipWhitespace();
            if (this.atEnd()) {
                this.fail("the file is empty; expected a JSON object", this.position());
            }
            const value = this.parseValue([], 0);
            this.skipWhitespace();
            if (!this.atEnd()) {
                const extra = this.peek();
                const hint = extra === "}" || extra === "]" ? ` (is there an extra '${extra}'?)` : "";
                this.fail(`${this.describeHere()} after the end of the JSON value${hint}`, this.position());
            }
            if (this.duplicates.length > 0) throw new InputError(this.duplicates);
            return new JsonSource(value, this.valuePositions, this.keyPositions);
        } catch (error) {
            if (error instanceof SyntaxFailure) throw new InputError([...this.duplicates, error.problem]);
            throw error;
        }
    }

    // ---- values ---------------------------------------------------------------------------

    private parseValue(path: JsonPathSegment[], depth: number): JsonValue {
        this.skipWhitespace();
        const start = this.position();
        this.valuePositions.set(jsonPathKey(path), start);
        const char = this.peek();
        switch (char) {
            case "{":
                return this.parseObject(path, depth + 1, start);
            case "[":
                return this.parseArray(path, depth + 1, start);
            case '"':
                return this.parseString();
            default:
                break;
        }
        if (char === "-" || isDigit(char)) return this.parseNumber();
        if (isWordChar(char)) return this.parseWord();
        if (char === ".") this.fail("unexpected '.'; a number needs a digit before '.'", start);
        if (char === "+") this.fail("unexpected '+'; JSON numbers have no plus sign", start);
        this.fail(this.unexpected("a value"), start);
    }

    private parseObject(path: JsonPathSegment[], depth: number, start: SourcePosition): JsonValue {
        this.checkDepth(depth, start);
        this.offset++; // {
        const object: {[key: string]: JsonValue} = {};
        const seen = new Map<string, SourcePosition>();
        this.skipWhitespace();
        if (this.peek() === "}") {
            this.offset++;
            return object;
        }
        let commaAt: SourcePosition | undefined;
        for (;;) {
            this.skipWhitespace();
            const keyStart = this.position();
            const char = this.peek();
            if (char !== '"') {
                if (char === "}" && commaAt !== undefined) {
                    this.fail("unexpected ',' (trailing commas are not allowed in JSON)", commaAt);
                }
                if (this.atEnd()) this.fail(this.unclosed("object", start), keyStart);
                if (isWordChar(char)) {
                    const word = this.readWord();
                    this.fail(`unquoted key '${word}' (JSON keys must be in double quotes: "${word}")`, keyStart);
                }
                this.fail(this.unexpected("a double-quoted key"), keyStart);
            }
            const key = this.parseString();
            const memberPath = [...path, key];
            const first = seen.get(key);
            if (first !== undefined) {
                const where = first.line === keyStart.line ? `line ${first.line}, column ${first.column}` : `line ${first.line}`;
                this.duplicates.push(
                    this.problem(ErrorCodes.configDuplicateKey, `duplicate key ${JSON.stringify(key)} (first at ${where})`, keyStart, memberPath)
                );
            } else {
                seen.set(key, keyStart);
            }
            this.keyPositions.set(jsonPathKey(memberPath), keyStart);

            this.skipWhitespace();
            if (this.peek() !== ":") {
                const got = this.atEnd() ? "the input ended" : `got ${this.describeHere()}`;
                this.fail(`expected ':' after key ${JSON.stringify(key)}, ${got}`, this.position());
            }
            this.offset++; // :
            const value = this.parseValue(memberPath, depth);
            // Define rather than assign: a key "__proto__" must become an own property, as with JSON.parse.
            Object.defineProperty(object, key, {value, enumerable: true, writable: true, configurable: true});

            this.skipWhitespace();
            const next = this.peek();
            if (next === ",") {
                commaAt = this.position();
                this.offset++;
                continue;
            }
            if (next === "}") {
                this.offset++;
                return object;
            }
            if (this.atEnd()) this.fail(this.unclosed("object", start), this.position());
            this.fail(`expected ',' or '}' after the value of ${JSON.stringify(key)}, got ${this.describeHere()}`, this.position());
        }
    }

    private parseArray(path: JsonPathSegment[], depth: number, start: SourcePosition): JsonValue {
        this.checkDepth(depth, start);
        this.offset++; // [
        const array: JsonValue[] = [];
        this.skipWhitespace();
        if (this.peek() === "]") {
            this.offset++;
            return array;
        }
        let commaAt: SourcePosition | undefined;
        for (;;) {
            this.skipWhitespace();
            if (this.peek() === "]" && commaAt !== undefined) {
                this.fail("unexpected ',' (trailing commas are not allowed in JSON)", commaAt);
            }
            if (this.atEnd()) this.fail(this.unclosed("array", start), this.position());
            array.push(this.parseValue([...path, array.length], depth));
            this.skipWhitespace();
            const next = this.peek();
            if (next === ",") {
                commaAt = this.position();
                this.offset++;
                continue;
            }
            if (next === "]") {
                this.offset++;
                return array;
            }
            if (this.atEnd()) this.fail(this.unclosed("array", start), this.position());
            this.fail(`expected ',' or ']' after element ${array.length - 1} of the array, got ${this.describeHere()}`, this.position());
        }
    }

    /** Parses a string starting at the opening quote. Raw line breaks end it as unterminated. */
    private parseString(): string {
        const start = this.position();
        const text = this.text;
        this.offset++; // opening quote
        let out = "";
        let runStart = this.offset;
        for (;;) {
            if (this.offset >= text.length) this.fail("unterminated string", start);
            const code = text.charCodeAt(this.offset);
            if (code === 0x22) {
                out += text.slice(runStart, this.offset);
                this.offset++;
                return out;
            }
            if (code === 0x5c) {
                out += text.slice(runStart, this.offset);
                out += this.parseEscape();
                runStart = this.offset;
                continue;
            }
            if (code === 0x0a || code === 0x0d) {
                this.fail("unterminated string (a string cannot contain a raw line break)", start);
            }
            if (code < 0x20) {
                this.fail(`control character ${codePoint(code)} must be escaped in a string`, this.position());
            }
            this.offset++;
        }
    }

    /** Parses one escape sequence at a backslash; returns the characters it stands for. */
    private parseEscape(): string {
        const at = this.position();
        const char = this.text[this.offset + 1];
        this.offset += 2;
        switch (char) {
            case '"':
                return '"';
            case "\\":
                return "\\";
            case "/":
                return "/";
            case "b":
                return "\b";
            case "f":
                return "\f";
            case "n":
                return "\n";
            case "r":
                return "\r";
            case "t":
                return "\t";
            case "u": {
                const hex = this.text.slice(this.offset, this.offset + 4);
                if (!/^[0-9A-Fa-f]{4}$/.test(hex)) {
                    this.fail(`invalid escape '\\u${hex.replace(/["\r\n].*$/s, "")}' in string (\\u needs 4 hex digits)`, at);
                }
                this.offset += 4;
                return String.fromCharCode(Number.parseInt(hex, 16));
            }
            case undefined:
                this.fail("unterminated string", at);
            default:
                this.fail(`invalid escape '\\${char}' in string`, at);
        }
    }

    private parseNumber(): number {
        const start = this.position();
        const begin = this.offset;
        const text = this.text;
        if (text[this.offset] === "-") {
            this.offset++;
            if (!isDigit(this.peek())) {
                if (text.startsWith("Infinity", this.offset)) this.fail("-Infinity is not valid JSON; write a number", start);
                this.fail("expected a digit after '-'", this.position());
            }
        }
        if (text[this.offset] === "0") {
            this.offset++;
            if (isDigit(this.peek())) this.fail("numbers cannot have leading zeros", start);
        } else {
            while (isDigit(this.peek())) this.offset++;
        }
        if (this.peek() === ".") {
            this.offset++;
            if (!isDigit(this.peek())) this.fail("expected a digit after '.'", this.position());
            while (isDigit(this.peek())) this.offset++;
        }
        const exponent = this.peek();
        if (exponent === "e" || exponent === "E") {
            this.offset++;
            const sign = this.peek();
            if (sign === "+" || sign === "-") this.offset++;
            if (!isDigit(this.peek())) this.fail("expected a digit in the exponent", this.position());
            while (isDigit(this.peek())) this.offset++;
        }
        const literal = text.slice(begin, this.offset);
        const value = Number(literal);
        if (!Number.isFinite(value)) this.fail(`number ${literal} is too large`, start);
        return value;
    }

    /** true, false, null; any other bare word is an error that says what was probably meant. */
    private parseWord(): JsonValue {
        const start = this.position();
        const word = this.readWord();
        if (word === "true") return true;
        if (word === "false") return false;
        if (word === "null") return null;
        if (word === "NaN" || word === "Infinity" || word === "undefined") {
            this.fail(`${word} is not valid JSON; write a number`, start);
        }
        const lower = word.toLowerCase();
        if (lower === "true" || lower === "false" || lower === "null" || word === "None") {
            this.fail(`unexpected '${word}' (JSON literals are true, false and null, in lower case)`, start);
        }
        this.fail(`unexpected '${word}'; expected a value (strings must be in double quotes)`, start);
    }

    private readWord(): string {
        const begin = this.offset;
        while (isWordChar(this.peek())) this.offset++;
        return this.text.slice(begin, this.offset);
    }

    // ---- scanning -------------------------------------------------------------------------

    private skipWhitespace(): void {
        const text = this.text;
        for (;;) {
            const code = text.charCodeAt(this.offset);
            if (code === 0x20 || code === 0x09) {
                this.offset++;
            } else if (code === 0x0a) {
                this.offset++;
                this.newLine();
            } else if (code === 0x0d) {
                this.offset++;
                if (text.charCodeAt(this.offset) === 0x0a) this.offset++;
                this.newLine();
            } else {
                return;
            }
        }
    }

    private newLine(): void {
        this.line++;
        this.lineStart = this.offset;
    }

    private checkDepth(depth: number, at: SourcePosition): void {
        if (depth > this.maxDepth) this.fail(`nesting deeper than ${this.maxDepth} levels is not supported`, at);
    }

    private atEnd(): boolean {
        return this.offset >= this.text.length;
    }

    /** The character at the current offset, or "" at the end. */
    private peek(): string {
        return this.text.charAt(this.offset);
    }

    private position(): SourcePosition {
        return {line: this.line, column: this.offset - this.lineStart + 1};
    }

    // ---- messages -------------------------------------------------------------------------

    /** "unexpected X; expected …", with the usual non-JSON habits named. */
    private unexpected(expected: string): string {
        if (this.atEnd()) return `unexpected end of input; expected ${expected}`;
        const char = this.peek();
        const next = this.text.charAt(this.offset + 1);
        if (char === "/" && (next === "/" || next === "*")) return "comments are not allowed in JSON";
        if (char === "'") return "strings must use double quotes in JSON, not single quotes";
        if (char === ",") return `unexpected ','; expected ${expected}`;
        return `unexpected ${this.describeHere()}; expected ${expected}`;
    }

    private unclosed(kind: "object" | "array", start: SourcePosition): string {
        const closer = kind === "object" ? "'}'" : "']'";
        return `unexpected end of input; the ${kind} opened at line ${start.line}, column ${start.column} needs a closing ${closer}`;
    }

    /** The current character as a message shows it. */
    private describeHere(): string {
        if (this.atEnd()) return "end of input";
        const char = this.peek();
        const next = this.text.charAt(this.offset + 1);
        if (char === "/" && (next === "/" || next === "*")) return "a comment (comments are not allowed in JSON)";
        const code = this.text.codePointAt(this.offset) ?? 0;
        if (code >= 0x21 && code <= 0x7e) return `'${char}'`;
        return codePoint(code);
    }

    private problem(code: string, message: string, at: SourcePosition, path?: JsonPath): Problem {
        return {
            code,
            message,
            ...(this.file === undefined ? {} : {file: this.file}),
            line: at.line,
            column: at.column,
            ...(path === undefined ? {} : {path: formatJsonPath(path)})
        };
    }

    private fail(message: string, at: SourcePosition): never {
        throw new SyntaxFailure(this.problem(ErrorCodes.configSyntax, message, at));
    }
}

function isDigit(char: string): boolean {
    return char >= "0" && char <= "9" && char.length === 1;
}

function isWordChar(char: string): boolean {
    return char.length === 1 && /[A-Za-z0-9_$]/.test(char);
}

function codePoint(code: number): string {
    return `U+${code.toString(16).toUpperCase().padStart(4, "0")}`;
}
