/** `[0,1,2,3,5]` → `0-3,5`: compact and unambiguous for slot and rank lists. */
export function formatIdList(ids: readonly number[]): string {
    const parts: string[] = [];
    let i = 0;
    while (i < ids.length) {
        let j = i;
        while (j + 1 < ids.length && ids[j + 1] === ids[j]! + 1) j++;
        parts.push(j > i + 1 ? `${ids[i]}-${ids[j]}` : j === i + 1 ? `${ids[i]},${ids[j]}` : `${ids[i]}`);
        i = j + 1;
    }
    return parts.join(",");
}
