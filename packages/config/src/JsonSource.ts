import {type JsonPath, jsonPathKey} from "./jsonPath.js";

/** A JSON value as our parser returns it. */
export type JsonValue = null | boolean | number | string | JsonValue[] | {[key: string]: JsonValue};

/** 1-based line and column; columns count UTF-16 code units (a tab is one column). */
export interface SourcePosition {
    readonly line: number;
    readonly column: number;
}

/**
 * A parsed JSON document together with where each of its parts was written: for every value, the
 * position of its first character; for every object member, the position of its key's opening
 * quote. Both maps are keyed by `jsonPathKey(path)`.
 */
export class JsonSource {
    readonly value: JsonValue;
    readonly valuePositions: ReadonlyMap<string, SourcePosition>;
    readonly keyPositions: ReadonlyMap<string, SourcePosition>;

    constructor(
        value: JsonValue,
        valuePositions: ReadonlyMap<string, SourcePosition>,
        keyPositions: ReadonlyMap<string, SourcePosition>
    ) {
        this.value = value;
        this.valuePositions = valuePositions;
        this.keyPositions = keyPositions;
    }

    /** Where the value at `path` starts, if the document has one there. */
    valuePosition(path: JsonPath): SourcePosition | undefined {
        return this.valuePositions.get(jsonPathKey(path));
    }

    /** Where the key of the member at `path` starts, if `path` names an object member of the document. */
    keyPosition(path: JsonPath): SourcePosition | undefined {
        return this.keyPositions.get(jsonPathKey(path));
    }

    /**
     * The best position for a problem about `path`: its key (when `anchor` is "key") or its value,
     * else the nearest enclosing value the document has (paths filled in by defaults have no
     * position of their own). "parent" starts the search at the enclosing value.
     */
    locate(path: JsonPath, anchor: "key" | "value" | "parent" = "value"): SourcePosition | undefined {
        if (anchor === "key") {
            const key = this.keyPosition(path);
            if (key !== undefined) return key;
        }
        for (let length = anchor === "parent" ? path.length - 1 : path.length; length >= 0; length--) {
            const position = this.valuePosition(path.slice(0, length));
            if (position !== undefined) return position;
        }
        return undefined;
    }
}
