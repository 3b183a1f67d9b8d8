import CSQLite

/// A SQLite call that failed, with SQLite's message.
public struct IndexError: Error, CustomStringConvertible, Sendable {
    public let message: String
    public var description: String { message }
}

/// A SQLite database: just what the store's index needs. Not thread-safe: one user at a time.
final class SQLiteDatabase {
    private var handle: OpaquePointer?
    let path: String

    /// Opens (or creates) the database at `path`, in WAL mode, waiting up to 10 s for another process's lock. The
    /// connection takes no mutex of its own (SQLite's multi-thread mode): it has one user at a time.
    init(path: String) throws {
        self.path = path
        guard
            sqlite3_open_v2(path, &handle, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX, nil)
                == SQLITE_OK
        else {
            let message = handle.map { String(cString: sqlite3_errmsg($0)) } ?? "out of memory"
            sqlite3_close(handle)
            throw IndexError(message: "cannot open \(path): \(message)")
        }
        sqlite3_busy_timeout(handle, 10_000)
        try execute("PRAGMA journal_mode=WAL")
        try execute("PRAGMA synchronous=NORMAL")
        // Up to 64 MiB of pages in memory (SQLite's default is 2 MiB): artifact hashes are random keys, and with a small
        // cache every insert into a large index read pages back from the file.
        try execute("PRAGMA cache_size=-65536")
    }

    deinit { sqlite3_close(handle) }

    func execute(_ sql: String) throws {
        var message: UnsafeMutablePointer<CChar>?
        guard sqlite3_exec(handle, sql, nil, nil, &message) == SQLITE_OK else {
            defer { sqlite3_free(message) }
            throw IndexError(message: "\(path): \(message.map { String(cString: $0) } ?? "error") in: \(sql)")
        }
    }

    /// The first column of the first row `sql` returns (`nil` for no row or NULL). The statement is finalized before
    /// this returns, so it holds no lock on what comes next (a statement left stepped locks the tables it read).
    func integer(_ sql: String) throws -> Int64? {
        let statement = try prepare(sql)
        return try statement.step() ? statement.integer(0) : nil
    }

    /// Runs `body` in one transaction: committed when it returns, rolled back when it throws.
    func transaction<T>(_ body: () throws -> T) throws -> T {
        try execute("BEGIN IMMEDIATE")
        do {
            let result = try body()
            try execute("COMMIT")
            return result
        } catch {
            try? execute("ROLLBACK")
            throw error
        }
    }

    func prepare(_ sql: String) throws -> Statement {
        var statement: OpaquePointer?
        guard sqlite3_prepare_v2(handle, sql, -1, &statement, nil) == SQLITE_OK, let statement else {
            throw IndexError(message: "\(path): \(String(cString: sqlite3_errmsg(handle))) in: \(sql)")
        }
        return Statement(statement, database: self)
    }

    fileprivate var lastError: String { String(cString: sqlite3_errmsg(handle)) }

    /// The rowid of the last row inserted through this connection.
    var lastInsertedRow: Int64 { sqlite3_last_insert_rowid(handle) }

    /// A prepared statement: bind values (1-based, in order), then step through its rows.
    final class Statement {
        private let statement: OpaquePointer
        private let database: SQLiteDatabase

        fileprivate init(_ statement: OpaquePointer, database: SQLiteDatabase) {
            self.statement = statement
            self.database = database
        }

        deinit { sqlite3_finalize(statement) }

        /// Binds `values` to the parameters, in order, after resetting the statement.
        /// - Precondition: one value for each parameter (a parameter left out keeps its last value).
        func bind(_ values: some Sequence<SQLiteValue>) throws {
            sqlite3_reset(statement)
            var position: Int32 = 1
            for value in values {
                let status: Int32
                switch value {
                case .null: status = sqlite3_bind_null(statement, position)
                case .integer(let number): status = sqlite3_bind_int64(statement, position, number)
                case .text(var text):
                    // With its length: SQLite copies the bytes without looking for their end.
                    status = text.withUTF8 { utf8 in
                        sqlite3_bind_text(statement, position, utf8.baseAddress, Int32(utf8.count), transient)
                    }
                }
                guard status == SQLITE_OK else { throw IndexError(message: "binding: \(database.lastError)") }
                position += 1
            }
        }

        /// Advances to the next row: `false` when there is none.
        func step() throws -> Bool {
            switch sqlite3_step(statement) {
            case SQLITE_ROW: return true
            case SQLITE_DONE: return false
            default: throw IndexError(message: "\(database.path): \(database.lastError)")
            }
        }

        /// Binds `values` and runs the statement to its end.
        func run(_ values: some Sequence<SQLiteValue>) throws {
            try bind(values)
            while try step() {}
        }

        func integer(_ column: Int32) -> Int64? {
            sqlite3_column_type(statement, column) == SQLITE_NULL ? nil : sqlite3_column_int64(statement, column)
        }

        func text(_ column: Int32) -> String? {
            guard let text = sqlite3_column_text(statement, column) else { return nil }
            return String(cString: text)
        }
    }
}

/// A value bound to a statement's parameter.
enum SQLiteValue {
    case null
    case integer(Int64)
    case text(String)

    static func optional(_ text: String?) -> SQLiteValue { text.map { .text($0) } ?? .null }
    static func optional(_ number: Int64?) -> SQLiteValue { number.map { .integer($0) } ?? .null }
}

/// SQLite's `SQLITE_TRANSIENT`: SQLite copies the bound text before the call returns.
private let transient = unsafeBitCast(-1, to: sqlite3_destructor_type.self)
