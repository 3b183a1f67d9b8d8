// The Lineage module: the materializer (lineage topic to file store) and the store reader (DESIGN.md, "File store").
// Not built yet: issue 6 fills it.
