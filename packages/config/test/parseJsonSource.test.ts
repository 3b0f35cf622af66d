import assert from "node:assert/strict";
import {describe, it} from "node:test";
import {ErrorCodes} from "@mixz/protocol";
import {parseJsonSource} from "@mixz/config";
import {problemOf, problemsOf} from "./helpers.js";

describe("parseJsonSource: valid documents", () => {
    const cases: readonly {name: string; text: string}[] = [
        {name: "empty object", text: "{}"},
        {name: "nested", text: '{"a": {"b": [1, 2, {"c": null}]}, "d": true, "e": false}'},
        {name: "numbers", text: "[0, -0, 1, -1, 1.5, 5e8, 5E+8, 1e-3, 123.456e-7, 9007199254740993]"},
        {name: "strings with escapes", text: String.raw`["a\"b", "\\", "\/", "\b\f\n\r\t", "\u00e9\u0041", "\ud83d\ude00", "日本"]`},
        {name: "scalar root", text: "  42  "},
        {name: "CRLF line breaks", text: '{\r\n  "a": 1\r\n}\r\n'},
        {name: "key __proto__", text: '{"__proto__": {"x": 1}}'}
    ];
    for (const {name, text} of cases) {
        it(`matches JSON.parse: ${name}`, () => {
            assert.deepEqual(parseJsonSource(text).value, JSON.parse(text));
        });
    }

    it("parses big exponents as numbers", () => {
        assert.deepEqual(parseJsonSource('{"reduce_bucket_size": 5e8, "x": 1e7}').value, {reduce_bucket_size: 500000000, x: 10000000});
    });

    it("keeps __proto__ as an own key, not a prototype", () => {
        const value = parseJsonSource('{"__proto__": {"polluted": true}}').value as Record<string, unknown>;
        assert.ok(Object.hasOwn(value, "__proto__"));
        assert.equal(Object.getPrototypeOf(value), Object.prototype);
        assert.equal(({} as Record<string, unknown>)["polluted"], undefined);
    });

    it("records the position of every value and key", () => {
        const text = ['{', '  "zero_optimization": {', '    "stage": 3,', '    "list": [1,', '      {"x": "y"}]', "  }", "}"].join("\n");
        const source = parseJsonSource(text);
        assert.deepEqual(source.valuePosition([]), {line: 1, column: 1});
        assert.deepEqual(source.keyPosition(["zero_optimization"]), {line: 2, column: 3});
        assert.deepEqual(source.valuePosition(["zero_optimization"]), {line: 2, column: 24});
        assert.deepEqual(source.keyPosition(["zero_optimization", "stage"]), {line: 3, column: 5});
        assert.deepEqual(source.valuePosition(["zero_optimization", "stage"]), {line: 3, column: 14});
        assert.deepEqual(source.valuePosition(["zero_optimization", "list", 0]), {line: 4, column: 14});
        assert.deepEqual(source.valuePosition(["zero_optimization", "list", 1]), {line: 5, column: 7});
        assert.deepEqual(source.keyPosition(["zero_optimization", "list", 1, "x"]), {line: 5, column: 8});
        assert.deepEqual(source.valuePosition(["zero_optimization", "list", 1, "x"]), {line: 5, column: 13});
        assert.equal(source.keyPosition(["zero_optimization", "list", 0]), undefined);
    });

    it("locates missing paths at the nearest enclosing value", () => {
        const source = parseJsonSource('{\n "fp16": {\n  "enabled": true}}');
        assert.deepEqual(source.locate(["fp16", "loss_scale"]), {line: 2, column: 10});
        assert.deepEqual(source.locate(["fp16", "enabled"], "key"), {line: 3, column: 3});
        assert.deepEqual(source.locate(["fp16", "enabled"], "parent"), {line: 2, column: 10});
        assert.deepEqual(source.locate(["nothing", "here"]), {line: 1, column: 1});
    });

    it("counts CRLF and lone CR as one line break each", () => {
        assert.deepEqual(parseJsonSource('{\r\n"a":\r\n1}').valuePosition(["a"]), {line: 3, column: 1});
        assert.deepEqual(parseJsonSource('{\r"a":\r1}').valuePosition(["a"]), {line: 3, column: 1});
    });

    it("tolerates a UTF-8 byte order mark without shifting columns", () => {
        const source = parseJsonSource('\uFEFF{"a": 1}');
        assert.deepEqual(source.value, {a: 1});
        assert.deepEqual(source.valuePosition(["a"]), {line: 1, column: 7});
    });

    it("parses deep nesting up to the limit", () => {
        const depth = 500;
        const text = "[".repeat(depth) + "1" + "]".repeat(depth);
        let value: unknown = parseJsonSource(text).value;
        for (let i = 0; i < depth; i++) value = (value as unknown[])[0];
        assert.equal(value, 1);
    });

    it("rejects nesting beyond the limit with an error, not a stack overflow", () => {
        const problem = problemOf(() => parseJsonSource("[".repeat(100_000)));
        assert.equal(problem.code, ErrorCodes.configSyntax);
        assert.match(problem.message, /nesting deeper than 512 levels/);
        assert.equal(problem.line, 1);
        assert.equal(problem.column, 513);
    });
});

describe("parseJsonSource: syntax errors", () => {
    const cases: readonly {name: string; text: string; line: number; column: number; message: RegExp}[] = [
        {name: "empty file", text: "", line: 1, column: 1, message: /the file is empty/},
        {name: "whitespace only", text: "  \n\t\n", line: 3, column: 1, message: /the file is empty/},
        {name: "BOM only", text: "\uFEFF", line: 1, column: 1, message: /the file is empty/},
        {name: "trailing comma in object", text: '{\n  "stage": 3,\n}', line: 2, column: 13, message: /^unexpected ',' \(trailing commas are not allowed in JSON\)$/},
        {name: "trailing comma in array", text: '{"betas": [0.9, 0.99, ]}', line: 1, column: 21, message: /trailing commas are not allowed/},
        {name: "line comment", text: '{\n  // ZeRO\n  "stage": 3\n}', line: 2, column: 3, message: /comments are not allowed in JSON/},
        {name: "block comment after value", text: '{"stage": 3 /* three */}', line: 1, column: 13, message: /comments are not allowed in JSON/},
        {name: "single quotes", text: "{'stage': 3}", line: 1, column: 2, message: /double quotes/},
        {name: "unquoted key", text: "{\n  stage: 3\n}", line: 2, column: 3, message: /unquoted key 'stage'/},
        {name: "missing colon", text: '{"stage" 3}', line: 1, column: 10, message: /^expected ':' after key "stage", got '3'$/},
        {name: "missing comma", text: '{\n  "a": 1\n  "b": 2\n}', line: 3, column: 3, message: /expected ',' or '}' after the value of "a", got '"'/},
        {name: "missing comma in array", text: "[1 2]", line: 1, column: 4, message: /expected ',' or '\]' after element 0/},
        {name: "unterminated string at end", text: '{"stage', line: 1, column: 2, message: /^unterminated string$/},
        {name: "raw line break in string", text: '{"name": "abc\n"}', line: 1, column: 10, message: /unterminated string \(a string cannot contain a raw line break\)/},
        {name: "control character in string", text: '{"a": "x\ty"}', line: 1, column: 9, message: /control character U\+0009 must be escaped/},
        {name: "bad escape", text: String.raw`{"a": "\x41"}`, line: 1, column: 8, message: /invalid escape '\\x'/},
        {name: "bad unicode escape", text: String.raw`{"a": "\u12G4"}`, line: 1, column: 8, message: /\\u needs 4 hex digits/},
        {name: "unclosed object", text: '{\n  "a": 1', line: 2, column: 9, message: /the object opened at line 1, column 1 needs a closing '}'/},
        {name: "unclosed array", text: '{"a": [1, 2', line: 1, column: 12, message: /the array opened at line 1, column 7 needs a closing '\]'/},
        {name: "missing value", text: '{"a": }', line: 1, column: 7, message: /unexpected '}'; expected a value/},
        {name: "leading comma", text: "[,1]", line: 1, column: 2, message: /unexpected ','; expected a value/},
        {name: "leading zero", text: '{"a": 012}', line: 1, column: 7, message: /leading zeros/},
        {name: "plus sign", text: '{"a": +1}', line: 1, column: 7, message: /no plus sign/},
        {name: "bare fraction", text: '{"a": .5}', line: 1, column: 7, message: /digit before '\.'/},
        {name: "dangling dot", text: '{"a": 1.}', line: 1, column: 9, message: /expected a digit after '\.'/},
        {name: "empty exponent", text: '{"a": 1e}', line: 1, column: 9, message: /expected a digit in the exponent/},
        {name: "lone minus", text: "-", line: 1, column: 2, message: /expected a digit after '-'/},
        {name: "NaN", text: '{"a": NaN}', line: 1, column: 7, message: /NaN is not valid JSON/},
        {name: "Infinity", text: '{"a": -Infinity}', line: 1, column: 7, message: /-Infinity is not valid JSON/},
        {name: "huge number", text: '{"a": 1e400}', line: 1, column: 7, message: /too large/},
        {name: "Python True", text: '{"a": True}', line: 1, column: 7, message: /JSON literals are true, false and null/},
        {name: "Python None", text: '{"a": None}', line: 1, column: 7, message: /JSON literals are true, false and null/},
        {name: "bare word", text: '{"a": fp16}', line: 1, column: 7, message: /unexpected 'fp16'/},
        {name: "two documents", text: "{}\n{}", line: 2, column: 1, message: /after the end of the JSON value/},
        {name: "extra closing brace", text: '{"a": 1}}', line: 1, column: 9, message: /is there an extra '}'/},
        {name: "non-ASCII garbage", text: '{"a": 1\u00a0}', line: 1, column: 8, message: /U\+00A0/},
        {name: "BOM in the middle", text: '{"a":\uFEFF 1}', line: 1, column: 6, message: /U\+FEFF/},
        {name: "error after BOM keeps columns", text: "\uFEFF{,}", line: 1, column: 2, message: /unexpected ','/}
    ];
    for (const {name, text, line, column, message} of cases) {
        it(name, () => {
            const problem = problemOf(() => parseJsonSource(text, {file: "ds.json"}));
            assert.equal(problem.code, ErrorCodes.configSyntax);
            assert.equal(problem.file, "ds.json");
            assert.deepEqual({line: problem.line, column: problem.column}, {line, column});
            assert.match(problem.message, message);
        });
    }
});

describe("parseJsonSource: duplicate keys", () => {
    it("names both positions at the top level", () => {
        const text = '{\n  "train_batch_size": 8,\n  "zero_optimization": {},\n  "train_batch_size": 16\n}';
        const problem = problemOf(() => parseJsonSource(text, {file: "ds.json"}));
        assert.equal(problem.code, ErrorCodes.configDuplicateKey);
        assert.equal(problem.path, "train_batch_size");
        assert.deepEqual([problem.line, problem.column], [4, 3]);
        assert.equal(problem.message, 'duplicate key "train_batch_size" (first at line 2)');
    });

    it("reports nested duplicates with their path", () => {
        const text = '{\n  "zero_optimization": {\n    "stage": 2,\n    "stage": 3\n  }\n}';
        const problem = problemOf(() => parseJsonSource(text));
        assert.equal(problem.code, ErrorCodes.configDuplicateKey);
        assert.equal(problem.path, "zero_optimization.stage");
        assert.deepEqual([problem.line, problem.column], [4, 5]);
        assert.equal(problem.message, 'duplicate key "stage" (first at line 3)');
    });

    it("names the column when both are on one line", () => {
        const problem = problemOf(() => parseJsonSource('{"a": 1, "a": 2}'));
        assert.equal(problem.message, 'duplicate key "a" (first at line 1, column 2)');
    });

    it("reports every duplicate, in arrays of objects too", () => {
        const text = '{"a": 1, "a": 2, "list": [{"x": 1, "x": 2}], "a": 3}';
        const problems = problemsOf(() => parseJsonSource(text));
        assert.deepEqual(
            problems.map((p) => [p.code, p.path, p.column]),
            [
                [ErrorCodes.configDuplicateKey, "a", 10],
                [ErrorCodes.configDuplicateKey, "list[0].x", 36],
                [ErrorCodes.configDuplicateKey, "a", 46]
            ]
        );
    });

    it("reports duplicates found before a syntax error together with it", () => {
        const problems = problemsOf(() => parseJsonSource('{"a": 1, "a": 2,}'));
        assert.deepEqual(problems.map((p) => p.code), [ErrorCodes.configDuplicateKey, ErrorCodes.configSyntax]);
    });

    it("treats keys that differ only after unescaping as duplicates", () => {
        const problem = problemOf(() => parseJsonSource(String.raw`{"stage": 1, "st\u0061ge": 2}`));
        assert.equal(problem.code, ErrorCodes.configDuplicateKey);
        assert.equal(problem.path, "stage");
    });
});
