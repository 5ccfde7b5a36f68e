using System.Globalization;
using System.Text;
using LlmBuild.Core.Diagnostics;
using LlmBuild.Core.Graph;
using LlmBuild.Core.Models;
using LlmBuild.Core.Plan;

namespace LlmBuild.Core.Mlir;

/// <summary>A module read back: the piece graph it describes and the weight file it names (module.weight_file).</summary>
public sealed record MlirPieceModule(PieceGraph Graph, string WeightFile);

/// <summary>
/// Reads the generic form of a TPU-MLIR top-dialect module — what <see cref="MlirWriter"/> prints, and what any tool
/// printing the same dialect generically gives — back into a <see cref="PieceGraph"/>, so codegen compiles exactly what
/// export wrote (as model_deploy.py would). Generic over ops: any quoted op name with any attributes of the kinds
/// <see cref="OpAttr"/> holds is read; whether an op can be lowered is the codegen's question. Accepted besides the
/// writer's own text: any SSA names, whitespace and // comments, attributes in any order, missing locations (an op
/// result is then named after its SSA value), and location aliases (<c>loc(#loc3)</c> with <c>#loc3 = loc("x")</c>
/// after the module, as mlir-opt prints by default). Anything else is an LLMB0310–LLMB0316 error naming line and column.
/// </summary>
public static class MlirReader
{
    /// <summary>Nesting of attribute arrays and locations; the writer needs 2.</summary>
    private const int MaxDepth = 32;
    private const int MaxRank = 16;
    /// <summary>Elements of one tensor (2^40): far above any model, far below overflow of the byte counts derived from it.</summary>
    private const long MaxElements = 1L << 40;

    public static MlirPieceModule ReadFile(string path)
    {
        string text;
        try { text = File.ReadAllText(path); }
        catch (Exception e) when (e is IOException or UnauthorizedAccessException)
        {
            throw new LlmBuildException(ErrorCodes.ReadFailed, $"Cannot read the MLIR module '{path}': {e.Message}. Rebuild to regenerate it.", path, e);
        }
        return Read(text, path);
    }

    /// <param name="text">The module's text.</param>
    /// <param name="source">Where the text came from (a path), for messages.</param>
    public static MlirPieceModule Read(string text, string source)
    {
        var parser = new Parser(text, source);
        ModuleSyntax module = parser.ParseModule();
        return new GraphBuilder(module, source).Build();
    }

    // ------------------------------------------------------------------ syntax

    internal enum AttrValueKind { Bool, Integer, Float, String, Array }

    /// <summary>An attribute value as written: the literal and, for numbers, its type (i64, si32, f64 …).</summary>
    internal sealed record AttrValue(AttrValueKind Kind, int Line, int Column, bool Bool = false, long Integer = 0, double Float = 0,
        string? String = null, string? Type = null, IReadOnlyList<AttrValue>? Items = null);

    internal sealed record TypeSyntax(bool IsNone, GraphDType DType, long[] Shape)
    {
        public override string ToString() => IsNone ? "none"
            : "tensor<" + string.Concat(Shape.Select(s => s.ToString(CultureInfo.InvariantCulture) + "x")) + DType.MlirName() + ">";

        public bool SameAs(TypeSyntax other) => IsNone == other.IsNone && (IsNone || (DType == other.DType && Shape.SequenceEqual(other.Shape)));
    }

    /// <summary>A location: the names it gives (one per result for fused[…]), none for unknown/file locations, or an alias to resolve.</summary>
    internal sealed record LocSyntax(IReadOnlyList<string> Names, string? Alias, int Line, int Column);

    internal sealed record ValueUse(string Id, int Index, int Line, int Column)
    {
        public override string ToString() => "%" + Id + (Index >= 0 ? "#" + Index.ToString(CultureInfo.InvariantCulture) : "");
    }

    internal sealed record OpSyntax(int Line, int Column, IReadOnlyList<(string Id, int Count)> Results, string Name,
        IReadOnlyList<ValueUse> Operands, IReadOnlyList<(string Name, AttrValue Value)> Attributes,
        IReadOnlyList<TypeSyntax> OperandTypes, IReadOnlyList<TypeSyntax> ResultTypes, LocSyntax? Loc);

    internal sealed record ArgSyntax(string Id, TypeSyntax Type, int Line, int Column);

    internal sealed record ModuleSyntax(string? Name, int Line, int Column, IReadOnlyList<(string Name, AttrValue Value)> Attributes,
        IReadOnlyList<ArgSyntax> Args, IReadOnlyList<TypeSyntax> ResultTypes, IReadOnlyList<OpSyntax> Ops,
        IReadOnlyList<ValueUse> Returned, IReadOnlyList<TypeSyntax> ReturnTypes, int ReturnLine, int ReturnColumn,
        IReadOnlyDictionary<string, LocSyntax> LocAliases);

    /// <summary>A recursive-descent parser over the text; every loop consumes input, so malformed text ends in an error, never a hang.</summary>
    private sealed class Parser(string text, string source)
    {
        private int _pos, _line = 1, _col = 1;

        private LlmBuildException Error(string code, string what, int line, int column) =>
            new(code, $"{source} line {line}, column {column}: {what}. The built-in backend reads the generic top-dialect form " +
                "LlmBuild's exporter writes (mlir-opt --mlir-print-op-generic prints a module in it); re-export the piece or fix the module.", source);

        private LlmBuildException Error(string code, string what) => Error(code, what, _line, _col);

        private char Peek(int ahead = 0) => _pos + ahead < text.Length ? text[_pos + ahead] : '\0';

        private void Advance()
        {
            if (text[_pos] == '\n') { _line++; _col = 1; }
            else _col++;
            _pos++;
        }

        private void SkipSpace()
        {
            while (_pos < text.Length)
            {
                char c = text[_pos];
                if (c is ' ' or '\t' or '\r' or '\n') Advance();
                else if (c == '/' && Peek(1) == '/') { while (_pos < text.Length && text[_pos] != '\n') Advance(); }
                else break;
            }
        }

        private string Found()
        {
            if (_pos >= text.Length) return "the end of the text";
            int end = _pos;
            while (end < text.Length && end - _pos < 24 && text[end] is not ('\n' or '\r')) end++;
            return "'" + text[_pos..end] + "'";
        }

        private bool TryConsume(string literal)
        {
            SkipSpace();
            if (string.CompareOrdinal(text, _pos, literal, 0, literal.Length) != 0) return false;
            for (int i = 0; i < literal.Length; i++) Advance();
            return true;
        }

        private void Expect(string literal)
        {
            if (!TryConsume(literal)) throw Error(ErrorCodes.MlirSyntax, $"expected '{literal}' but found {Found()}");
        }

        private static bool IsIdStart(char c) => char.IsAsciiLetter(c) || c == '_';
        private static bool IsIdChar(char c) => char.IsAsciiLetterOrDigit(c) || c is '_' or '$' or '.' or '-';

        private bool AtKeyword(string word)
        {
            SkipSpace();
            return string.CompareOrdinal(text, _pos, word, 0, word.Length) == 0 && !IsIdChar(Peek(word.Length));
        }

        private bool TryKeyword(string word)
        {
            if (!AtKeyword(word)) return false;
            for (int i = 0; i < word.Length; i++) Advance();
            return true;
        }

        private void ExpectKeyword(string word)
        {
            if (!TryKeyword(word)) throw Error(ErrorCodes.MlirSyntax, $"expected '{word}' but found {Found()}");
        }

        private string BareId()
        {
            SkipSpace();
            if (!IsIdStart(Peek())) throw Error(ErrorCodes.MlirSyntax, $"expected a name but found {Found()}");
            int start = _pos;
            while (_pos < text.Length && IsIdChar(text[_pos])) Advance();
            return text[start.._pos];
        }

        /// <summary>A string literal: \" \\ \n \t and \XX (a hex byte) escapes, UTF-8 bytes.</summary>
        private string StringLiteral()
        {
            SkipSpace();
            int line = _line, col = _col;
            if (Peek() != '"') throw Error(ErrorCodes.MlirSyntax, $"expected a string literal but found {Found()}");
            Advance();
            var bytes = new List<byte>();
            Span<byte> utf8 = stackalloc byte[4];
            while (true)
            {
                if (_pos >= text.Length || text[_pos] is '\n' or '\r')
                    throw Error(ErrorCodes.MlirSyntax, "a string literal is not closed before the end of its line", line, col);
                char c = text[_pos];
                if (c == '"') { Advance(); break; }
                if (c == '\\')
                {
                    Advance();
                    char e = Peek();
                    if (e is '"' or '\\') { bytes.Add((byte)e); Advance(); }
                    else if (e == 'n') { bytes.Add((byte)'\n'); Advance(); }
                    else if (e == 't') { bytes.Add((byte)'\t'); Advance(); }
                    else if (char.IsAsciiHexDigit(e) && char.IsAsciiHexDigit(Peek(1)))
                    {
                        bytes.Add(byte.Parse(text.AsSpan(_pos, 2), NumberStyles.HexNumber, CultureInfo.InvariantCulture));
                        Advance(); Advance();
                    }
                    else throw Error(ErrorCodes.MlirSyntax, $"unknown escape '\\{e}' in a string literal");
                    continue;
                }
                if (char.IsSurrogate(c))
                {
                    if (!char.IsHighSurrogate(c) || !char.IsLowSurrogate(Peek(1)))
                        throw Error(ErrorCodes.MlirSyntax, "a string literal holds an unpaired surrogate");
                    int n = Encoding.UTF8.GetBytes(text.AsSpan(_pos, 2), utf8);
                    for (int i = 0; i < n; i++) bytes.Add(utf8[i]);
                    Advance(); Advance();
                    continue;
                }
                int count = Encoding.UTF8.GetBytes(text.AsSpan(_pos, 1), utf8);
                for (int i = 0; i < count; i++) bytes.Add(utf8[i]);
                Advance();
            }
            try { return new UTF8Encoding(false, throwOnInvalidBytes: true).GetString(bytes.ToArray()); }
            catch (DecoderFallbackException) { throw Error(ErrorCodes.MlirSyntax, "a string literal's escapes are not valid UTF-8", line, col); }
        }

        private string SymbolName()
        {
            Expect("@");
            return Peek() == '"' ? StringLiteral() : BareId();
        }

        /// <summary>%name: the name after '%' (digits, letters, _ $ . -).</summary>
        private string ValueId()
        {
            SkipSpace();
            if (Peek() != '%') throw Error(ErrorCodes.MlirSyntax, $"expected a value (%name) but found {Found()}");
            Advance();
            int start = _pos;
            while (_pos < text.Length && IsIdChar(text[_pos])) Advance();
            if (_pos == start) throw Error(ErrorCodes.MlirSyntax, "'%' is not followed by a value name");
            return text[start.._pos];
        }

        private int SmallCount(string what)
        {
            SkipSpace();
            int line = _line, col = _col;
            int start = _pos;
            while (_pos < text.Length && char.IsAsciiDigit(text[_pos])) Advance();
            if (_pos == start) throw Error(ErrorCodes.MlirSyntax, $"expected {what} but found {Found()}");
            if (!int.TryParse(text.AsSpan(start, _pos - start), NumberStyles.None, CultureInfo.InvariantCulture, out int value) || value > 1 << 20)
                throw Error(ErrorCodes.MlirLimit, $"{what} {text[start.._pos]} is too large", line, col);
            return value;
        }

        private ValueUse Use()
        {
            SkipSpace();
            int line = _line, col = _col;
            string id = ValueId();
            int index = -1;
            if (Peek() == '#') { Advance(); index = SmallCount("a result index after '#'"); }
            return new ValueUse(id, index, line, col);
        }

        // ---------------------------------------------------------- module, func, ops

        public ModuleSyntax ParseModule()
        {
            SkipSpace();
            int line = _line, col = _col;
            ExpectKeyword("module");
            string? name = AtSymbol() ? SymbolName() : null;
            var attrs = TryKeyword("attributes") ? AttrDict() : [];
            Expect("{");
            var (args, results, ops, returned, returnTypes, rl, rc) = ParseFunc();
            Expect("}");
            OptionalLoc();
            var aliases = new Dictionary<string, LocSyntax>(StringComparer.Ordinal);
            SkipSpace();
            while (Peek() == '#')
            {
                int aliasLine = _line, aliasCol = _col;
                Advance();
                string alias = RawId("a location alias name");
                Expect("=");
                LocSyntax loc = Loc(0);
                if (!aliases.TryAdd(alias, loc)) throw Error(ErrorCodes.MlirSyntax, $"location alias #{alias} is defined twice", aliasLine, aliasCol);
                SkipSpace();
            }
            if (_pos < text.Length) throw Error(ErrorCodes.MlirSyntax, $"expected the end of the text after the module but found {Found()}");
            return new ModuleSyntax(name, line, col, attrs, args, results, ops, returned, returnTypes, rl, rc, aliases);
        }

        private bool AtSymbol()
        {
            SkipSpace();
            return Peek() == '@';
        }

        private string RawId(string what)
        {
            int start = _pos;
            while (_pos < text.Length && IsIdChar(text[_pos])) Advance();
            if (_pos == start) throw Error(ErrorCodes.MlirSyntax, $"expected {what} but found {Found()}");
            return text[start.._pos];
        }

        private (List<ArgSyntax>, List<TypeSyntax>, List<OpSyntax>, List<ValueUse>, List<TypeSyntax>, int, int) ParseFunc()
        {
            ExpectKeyword("func.func");
            SkipSpace();
            int line = _line, col = _col;
            string name = SymbolName();
            if (name != "main") throw Error(ErrorCodes.MlirBadModule, $"the function is @{name}; a piece module has one function, @main", line, col);
            Expect("(");
            var args = new List<ArgSyntax>();
            if (!TryConsume(")"))
            {
                do
                {
                    SkipSpace();
                    int al = _line, ac = _col;
                    string id = ValueId();
                    Expect(":");
                    args.Add(new ArgSyntax(id, Type(), al, ac));
                    OptionalLoc();
                } while (TryConsume(","));
                Expect(")");
            }
            var results = TryConsume("->") ? TypeList() : [];
            if (TryKeyword("attributes")) _ = AttrDict();
            Expect("{");
            var ops = new List<OpSyntax>();
            while (!AtKeyword("return"))
            {
                SkipSpace();
                if (_pos >= text.Length || Peek() == '}') throw Error(ErrorCodes.MlirSyntax, $"expected an op or 'return' but found {Found()}");
                ops.Add(Op());
            }
            SkipSpace();
            int rl = _line, rc = _col;
            ExpectKeyword("return");
            var returned = new List<ValueUse>();
            var returnTypes = new List<TypeSyntax>();
            SkipSpace();
            if (Peek() == '%')
            {
                do returned.Add(Use()); while (TryConsume(","));
                Expect(":");
                do returnTypes.Add(Type()); while (TryConsume(","));
            }
            OptionalLoc();
            Expect("}");
            OptionalLoc();
            return (args, results, ops, returned, returnTypes, rl, rc);
        }

        private OpSyntax Op()
        {
            SkipSpace();
            int line = _line, col = _col;
            var results = new List<(string, int)>();
            if (Peek() == '%')
            {
                do
                {
                    string id = ValueId();
                    int count = 1;
                    if (Peek() == ':' ) { Advance(); count = SmallCount("a result count after ':'"); }
                    results.Add((id, count));
                } while (TryConsume(","));
                Expect("=");
            }
            SkipSpace();
            if (Peek() != '"')
                throw Error(ErrorCodes.MlirSyntax, $"expected a quoted op name (the generic form, e.g. \"top.Add\") but found {Found()}");
            string name = StringLiteral();
            Expect("(");
            var operands = new List<ValueUse>();
            if (!TryConsume(")"))
            {
                do operands.Add(Use()); while (TryConsume(","));
                Expect(")");
            }
            SkipSpace();
            if (Peek() is '[' or '<' or '(')
                throw Error(ErrorCodes.MlirSyntax, $"op {name} has successors, properties or regions, which top-dialect ops never have");
            var attrs = Peek() == '{' ? AttrDict() : [];
            Expect(":");
            Expect("(");
            var operandTypes = new List<TypeSyntax>();
            if (!TryConsume(")"))
            {
                do operandTypes.Add(Type()); while (TryConsume(","));
                Expect(")");
            }
            Expect("->");
            var resultTypes = TypeList();
            LocSyntax? loc = OptionalLoc();
            return new OpSyntax(line, col, results, name, operands, attrs, operandTypes, resultTypes, loc);
        }

        /// <summary>One type, or a parenthesized (possibly empty) list.</summary>
        private List<TypeSyntax> TypeList()
        {
            if (!TryConsume("(")) return [Type()];
            var types = new List<TypeSyntax>();
            if (TryConsume(")")) return types;
            do types.Add(Type()); while (TryConsume(","));
            Expect(")");
            return types;
        }

        private TypeSyntax Type()
        {
            SkipSpace();
            int line = _line, col = _col;
            if (TryKeyword("none")) return new TypeSyntax(true, GraphDType.F32, []);
            if (!TryKeyword("tensor"))
                throw Error(ErrorCodes.MlirUnsupportedType, $"expected a tensor<...> or none type but found {Found()}");
            if (Peek() != '<') throw Error(ErrorCodes.MlirSyntax, $"expected '<' after 'tensor' but found {Found()}");
            Advance();
            var shape = new List<long>();
            long elements = 1;
            while (char.IsAsciiDigit(Peek()) || Peek() == '?')
            {
                if (Peek() == '?') throw Error(ErrorCodes.MlirUnsupportedType, "a dynamic dimension '?': piece modules have static shapes");
                int dl = _line, dc = _col, start = _pos;
                while (char.IsAsciiDigit(Peek())) Advance();
                if (!long.TryParse(text.AsSpan(start, _pos - start), NumberStyles.None, CultureInfo.InvariantCulture, out long dim) || dim > MaxElements)
                    throw Error(ErrorCodes.MlirLimit, $"dimension {text[start.._pos]} is too large", dl, dc);
                shape.Add(dim);
                if (shape.Count > MaxRank) throw Error(ErrorCodes.MlirLimit, $"a tensor of rank above {MaxRank}", line, col);
                elements = dim == 0 ? 0 : elements > MaxElements / dim ? MaxElements + 1 : elements * dim;
                if (elements > MaxElements) throw Error(ErrorCodes.MlirLimit, $"a tensor of more than 2^40 elements", line, col);
                if (Peek() != 'x') throw Error(ErrorCodes.MlirSyntax, $"expected 'x' after a dimension but found {Found()}");
                Advance();
            }
            int el = _line, ec = _col, elemStart = _pos;
            while (char.IsAsciiLetterOrDigit(Peek())) Advance();
            string element = text[elemStart.._pos];
            GraphDType dtype = element switch
            {
                "f32" => GraphDType.F32,
                "bf16" => GraphDType.BF16,
                "f16" => GraphDType.F16,
                "si32" => GraphDType.SI32,
                "ui8" => GraphDType.UI8,
                "" => throw Error(ErrorCodes.MlirSyntax, $"expected an element type but found {Found()}", el, ec),
                _ => throw Error(ErrorCodes.MlirUnsupportedType, $"element type '{element}' (supported: f32, bf16, f16, si32, ui8)", el, ec),
            };
            if (Peek() != '>') throw Error(ErrorCodes.MlirUnsupportedType, $"expected '>' closing the tensor type but found {Found()} (encodings are not supported)");
            Advance();
            return new TypeSyntax(false, dtype, shape.ToArray());
        }

        // ---------------------------------------------------------- attributes

        private List<(string Name, AttrValue Value)> AttrDict()
        {
            Expect("{");
            var attrs = new List<(string, AttrValue)>();
            if (TryConsume("}")) return attrs;
            do
            {
                SkipSpace();
                int line = _line, col = _col;
                string name = Peek() == '"' ? StringLiteral() : BareId();
                if (!TryConsume("="))
                    throw Error(ErrorCodes.MlirUnsupportedAttribute, $"attribute '{name}' has no value (unit attributes are not supported)", line, col);
                attrs.Add((name, Value(0)));
            } while (TryConsume(","));
            Expect("}");
            return attrs;
        }

        private AttrValue Value(int depth)
        {
            SkipSpace();
            int line = _line, col = _col;
            if (depth > MaxDepth) throw Error(ErrorCodes.MlirLimit, $"attribute arrays nested deeper than {MaxDepth}");
            char c = Peek();
            if (c == '[')
            {
                Advance();
                var items = new List<AttrValue>();
                if (!TryConsume("]"))
                {
                    do items.Add(Value(depth + 1)); while (TryConsume(","));
                    Expect("]");
                }
                return new AttrValue(AttrValueKind.Array, line, col, Items: items);
            }
            if (c == '"')
            {
                string s = StringLiteral();
                if (AtTypeSuffix()) throw Error(ErrorCodes.MlirUnsupportedAttribute, "a typed string attribute", line, col);
                return new AttrValue(AttrValueKind.String, line, col, String: s);
            }
            if (TryKeyword("true")) return new AttrValue(AttrValueKind.Bool, line, col, Bool: true);
            if (TryKeyword("false")) return new AttrValue(AttrValueKind.Bool, line, col, Bool: false);
            if (char.IsAsciiDigit(c) || (c == '-' && char.IsAsciiDigit(Peek(1)))) return Number(line, col);
            throw Error(ErrorCodes.MlirUnsupportedAttribute,
                $"attribute value {Found()} is not a bool, number, string or array (dense, affine, symbol and dialect attributes are not supported)");
        }

        private bool AtTypeSuffix()
        {
            SkipSpace();
            return Peek() == ':';
        }

        private AttrValue Number(int line, int col)
        {
            int start = _pos;
            if (Peek() == '-') Advance();
            if (Peek() == '0' && Peek(1) is 'x' or 'X') throw Error(ErrorCodes.MlirUnsupportedAttribute, "hexadecimal number literals");
            while (char.IsAsciiDigit(Peek())) Advance();
            bool isFloat = false;
            if (Peek() == '.')
            {
                isFloat = true;
                Advance();
                while (char.IsAsciiDigit(Peek())) Advance();
            }
            if (Peek() is 'e' or 'E')
            {
                isFloat = true;
                Advance();
                if (Peek() is '+' or '-') Advance();
                if (!char.IsAsciiDigit(Peek())) throw Error(ErrorCodes.MlirSyntax, $"expected exponent digits but found {Found()}");
                while (char.IsAsciiDigit(Peek())) Advance();
            }
            string literal = text[start.._pos];
            if (_pos - start > 400) throw Error(ErrorCodes.MlirLimit, "a number literal longer than 400 characters", line, col);
            string? type = null;
            if (TryConsume(":"))
            {
                SkipSpace();
                type = RawId("the number's type");
            }
            if (isFloat)
            {
                if (type is not (null or "f64"))
                    throw Error(ErrorCodes.MlirUnsupportedAttribute, $"float attribute of type {type} (only f64 is mapped)", line, col);
                if (!double.TryParse(literal, NumberStyles.Float, CultureInfo.InvariantCulture, out double value) || !double.IsFinite(value))
                    throw Error(ErrorCodes.MlirLimit, $"float literal {literal} is outside the f64 range", line, col);
                return new AttrValue(AttrValueKind.Float, line, col, Float: value, Type: "f64");
            }
            type ??= "i64";
            if (type is not ("i64" or "i32" or "si32"))
                throw Error(ErrorCodes.MlirUnsupportedAttribute, $"integer attribute of type {type} (mapped: i64, i32, si32; floats need a '.')", line, col);
            if (!long.TryParse(literal, NumberStyles.AllowLeadingSign, CultureInfo.InvariantCulture, out long integer)
                || (type != "i64" && integer is < int.MinValue or > int.MaxValue))
                throw Error(ErrorCodes.MlirLimit, $"integer literal {literal} does not fit {type}", line, col);
            return new AttrValue(AttrValueKind.Integer, line, col, Integer: integer, Type: type);
        }

        // ---------------------------------------------------------- locations

        private LocSyntax? OptionalLoc()
        {
            if (!AtKeyword("loc")) return null;
            return Loc(0);
        }

        /// <summary>loc(unknown | "name" | "name"(loc) | "file":line:col | fused[...] | #alias).</summary>
        private LocSyntax Loc(int depth)
        {
            SkipSpace();
            int line = _line, col = _col;
            ExpectKeyword("loc");
            Expect("(");
            LocSyntax loc = LocBody(depth, line, col);
            Expect(")");
            return loc;
        }

        private LocSyntax LocBody(int depth, int line, int col)
        {
            if (depth > MaxDepth) throw Error(ErrorCodes.MlirLimit, $"locations nested deeper than {MaxDepth}");
            SkipSpace();
            if (TryKeyword("unknown")) return new LocSyntax([], null, line, col);
            if (Peek() == '#')
            {
                Advance();
                return new LocSyntax([], RawId("a location alias name"), line, col);
            }
            if (TryKeyword("fused"))
            {
                if (TryConsume("<")) { _ = Value(depth + 1); Expect(">"); }
                Expect("[");
                var names = new List<string>();
                if (!TryConsume("]"))
                {
                    do
                    {
                        SkipSpace();
                        int il = _line, ic = _col;
                        LocSyntax item = LocBody(depth + 1, il, ic);
                        if (item.Alias is not null || item.Names.Count != 1)
                            throw Error(ErrorCodes.MlirSyntax, "a fused location's items must be names (\"name\")", il, ic);
                        names.Add(item.Names[0]);
                    } while (TryConsume(","));
                    Expect("]");
                }
                return new LocSyntax(names, null, line, col);
            }
            if (Peek() != '"') throw Error(ErrorCodes.MlirSyntax, $"expected a location (unknown, \"name\", fused[...] or #alias) but found {Found()}");
            string name = StringLiteral();
            if (TryConsume(":"))
            {
                // "file":line:col names a source position, not a tensor.
                _ = SmallCount("a line number");
                Expect(":");
                _ = SmallCount("a column number");
                return new LocSyntax([], null, line, col);
            }
            if (TryConsume("("))
            {
                _ = LocBody(depth + 1, _line, _col);
                Expect(")");
            }
            return new LocSyntax([name], null, line, col);
        }
    }

    // ------------------------------------------------------------------ graph

    /// <summary>Turns the syntax into a <see cref="PieceGraph"/>, checking every use, type and name.</summary>
    private sealed class GraphBuilder(ModuleSyntax module, string source)
    {
        private readonly Dictionary<string, string[]?> _values = new(StringComparer.Ordinal); // id → tensor names (null: top.None)
        private readonly Dictionary<string, ArgSyntax> _args = new(StringComparer.Ordinal);
        private readonly Dictionary<string, GraphTensor> _tensors = new(StringComparer.Ordinal);
        private readonly List<GraphTensor> _tensorList = [];

        private LlmBuildException Error(string code, string what, int line, int column) =>
            new(code, $"{source} line {line}, column {column}: {what}. Re-export the piece, or fix the module so it describes one net of the piece.", source);

        public MlirPieceModule Build()
        {
            var attrs = new Dictionary<string, AttrValue>(StringComparer.Ordinal);
            foreach (var (name, value) in module.Attributes)
                if (!attrs.TryAdd(name, value)) throw Error(ErrorCodes.MlirBadModule, $"module attribute {name} is given twice", value.Line, value.Column);
            string Need(string name) => attrs.TryGetValue(name, out AttrValue? v)
                ? v.Kind == AttrValueKind.String && v.String!.Length > 0 ? v.String
                    : throw Error(ErrorCodes.MlirBadModule, $"module attribute {name} must be a non-empty string", v.Line, v.Column)
                : throw Error(ErrorCodes.MlirBadModule, $"the module has no {name} attribute", module.Line, module.Column);

            if (module.Name is null) throw Error(ErrorCodes.MlirBadModule, "the module has no name (module @<piece>)", module.Line, module.Column);
            string weightFile = Need(MlirWriter.WeightFileAttribute);
            string platform = Need(MlirWriter.PlatformAttribute);
            if (attrs.TryGetValue(MlirWriter.StateAttribute, out AttrValue? state) && state.String != "TOP_F32")
                throw Error(ErrorCodes.MlirBadModule, $"module.state is {Describe(state)}, not \"TOP_F32\": only top-dialect modules are read", state.Line, state.Column);
            bool dynamic = false;
            if (attrs.TryGetValue(MlirWriter.RunModeAttribute, out AttrValue? mode))
                dynamic = mode.String switch
                {
                    "STATIC" => false,
                    "DYNAMIC" => true,
                    _ => throw Error(ErrorCodes.MlirBadModule, $"module.top_run_mode is {Describe(mode)}, not \"STATIC\" or \"DYNAMIC\"", mode.Line, mode.Column),
                };
            string kindText = Need(MlirWriter.PieceKindAttribute);
            if (!Enum.TryParse(kindText, ignoreCase: false, out PieceKind kind) || kind.ToString() != kindText)
                throw Error(ErrorCodes.MlirBadModule,
                    $"{MlirWriter.PieceKindAttribute} \"{kindText}\" is not a piece kind ({string.Join(", ", Enum.GetNames<PieceKind>())})",
                    attrs[MlirWriter.PieceKindAttribute].Line, attrs[MlirWriter.PieceKindAttribute].Column);
            var constantKeys = new HashSet<string>(StringComparer.Ordinal);
            if (attrs.TryGetValue(MlirWriter.ConstantsAttribute, out AttrValue? constants))
            {
                if (constants.Kind != AttrValueKind.Array || constants.Items!.Any(i => i.Kind != AttrValueKind.String))
                    throw Error(ErrorCodes.MlirBadModule, $"{MlirWriter.ConstantsAttribute} must be an array of strings (top.Weight names)", constants.Line, constants.Column);
                foreach (AttrValue item in constants.Items!)
                    if (!constantKeys.Add(item.String!)) throw Error(ErrorCodes.MlirBadModule, $"{MlirWriter.ConstantsAttribute} names \"{item.String}\" twice", item.Line, item.Column);
            }

            foreach (ArgSyntax arg in module.Args)
            {
                if (arg.Type.IsNone) throw Error(ErrorCodes.MlirUnsupportedType, $"argument %{arg.Id} is of type none", arg.Line, arg.Column);
                if (!_args.TryAdd(arg.Id, arg)) throw Error(ErrorCodes.MlirUndefinedValue, $"argument %{arg.Id} is declared twice", arg.Line, arg.Column);
            }
            var inputs = new SortedDictionary<int, string>();
            var weights = new List<GraphWeight>();
            var graphConstants = new List<GraphConstant>();
            var ops = new List<GraphOp>();
            foreach (OpSyntax op in module.Ops)
            {
                int resultCount = op.Results.Sum(r => r.Count);
                if (op.ResultTypes.Count != resultCount)
                    throw Error(ErrorCodes.MlirTypeMismatch, $"{op.Name} defines {resultCount} result(s) but its signature has {op.ResultTypes.Count}", op.Line, op.Column);
                if (op.OperandTypes.Count != op.Operands.Count)
                    throw Error(ErrorCodes.MlirTypeMismatch, $"{op.Name} has {op.Operands.Count} operand(s) but its signature has {op.OperandTypes.Count}", op.Line, op.Column);
                switch (op.Name)
                {
                    case "top.None":
                        if (op.Operands.Count != 0 || resultCount != 1 || !op.ResultTypes[0].IsNone)
                            throw Error(ErrorCodes.MlirTypeMismatch, "top.None takes no operands and gives one value of type none", op.Line, op.Column);
                        Define(op, null);
                        break;
                    case "top.Input":
                    {
                        if (op.Operands.Count != 1 || resultCount != 1)
                            throw Error(ErrorCodes.MlirTypeMismatch, "top.Input takes one function argument and gives one tensor", op.Line, op.Column);
                        ValueUse use = op.Operands[0];
                        if (use.Index >= 0 || !_args.TryGetValue(use.Id, out ArgSyntax? arg))
                            throw Error(ErrorCodes.MlirBadModule, $"top.Input's operand {use} is not an argument of @main", use.Line, use.Column);
                        if (!arg.Type.SameAs(op.OperandTypes[0]) || !arg.Type.SameAs(op.ResultTypes[0]))
                            throw Error(ErrorCodes.MlirTypeMismatch, $"top.Input of %{arg.Id} ({arg.Type}) is typed {op.OperandTypes[0]} -> {op.ResultTypes[0]}", op.Line, op.Column);
                        int index = module.Args.ToList().IndexOf(arg);
                        string name = Names(op)[0];
                        if (!inputs.TryAdd(index, name)) throw Error(ErrorCodes.MlirBadModule, $"argument %{arg.Id} has two top.Input ops", op.Line, op.Column);
                        AddTensor(name, op.ResultTypes[0], op);
                        Define(op, [name]);
                        break;
                    }
                    case "top.Weight":
                    {
                        if (op.Operands.Count != 0 || resultCount != 1 || op.ResultTypes[0].IsNone)
                            throw Error(ErrorCodes.MlirTypeMismatch, "top.Weight takes no operands and gives one tensor", op.Line, op.Column);
                        if (op.Attributes.Count > 0)
                            throw Error(ErrorCodes.MlirUnsupportedAttribute, $"top.Weight has attribute {op.Attributes[0].Name}; weights are read whole from the weight file", op.Line, op.Column);
                        string key = LocName(op) ?? throw Error(ErrorCodes.MlirBadModule,
                            "a top.Weight has no location name; its loc(\"...\") is the weight file's key", op.Line, op.Column);
                        TypeSyntax t = op.ResultTypes[0];
                        AddTensor(key, t, op);
                        if (constantKeys.Contains(key)) graphConstants.Add(new GraphConstant(key, t.DType, t.Shape, []));
                        else weights.Add(new GraphWeight(key, t.DType, t.Shape, null, PartOf(key)));
                        Define(op, [key]);
                        break;
                    }
                    default:
                    {
                        if (resultCount == 0) throw Error(ErrorCodes.MlirBadModule, $"{op.Name} has no results; every op of a piece computes a tensor", op.Line, op.Column);
                        var operands = new List<string>();
                        for (int i = 0; i < op.Operands.Count; i++)
                        {
                            var (name, type) = Resolve(op.Operands[i]);
                            if (!type.SameAs(op.OperandTypes[i]))
                                throw Error(ErrorCodes.MlirTypeMismatch, $"{op.Name}'s operand {op.Operands[i]} is {type} but the signature says {op.OperandTypes[i]}", op.Operands[i].Line, op.Operands[i].Column);
                            operands.Add(name);
                        }
                        string[] names = Names(op);
                        for (int r = 0; r < names.Length; r++)
                        {
                            if (op.ResultTypes[r].IsNone) throw Error(ErrorCodes.MlirUnsupportedType, $"{op.Name}'s result {r} is of type none", op.Line, op.Column);
                            AddTensor(names[r], op.ResultTypes[r], op);
                        }
                        var attrList = op.Attributes.Select(a => ToOpAttr(op, a.Name, a.Value)).OrderBy(a => a.Name, StringComparer.Ordinal).ToList();
                        for (int i = 1; i < attrList.Count; i++)
                            if (attrList[i].Name == attrList[i - 1].Name)
                                throw Error(ErrorCodes.MlirBadModule, $"{op.Name} has attribute {attrList[i].Name} twice", op.Line, op.Column);
                        ops.Add(new GraphOp(op.Name, operands, names, attrList));
                        Define(op, names);
                        break;
                    }
                }
            }
            foreach (string key in constantKeys)
                if (!graphConstants.Any(c => c.Key == key))
                    throw Error(ErrorCodes.MlirBadModule, $"{MlirWriter.ConstantsAttribute} names \"{key}\", which no top.Weight defines", module.Line, module.Column);
            if (inputs.Count != module.Args.Count)
            {
                ArgSyntax unused = module.Args.Where((_, i) => !inputs.ContainsKey(i)).First();
                throw Error(ErrorCodes.MlirBadModule, $"argument %{unused.Id} is not consumed by a top.Input", unused.Line, unused.Column);
            }

            if (module.Returned.Count == 0) throw Error(ErrorCodes.MlirBadModule, "@main returns nothing; a piece has outputs", module.ReturnLine, module.ReturnColumn);
            if (module.ReturnTypes.Count != module.Returned.Count || module.ResultTypes.Count != module.Returned.Count)
                throw Error(ErrorCodes.MlirTypeMismatch,
                    $"return gives {module.Returned.Count} value(s) typed with {module.ReturnTypes.Count} type(s); @main declares {module.ResultTypes.Count} result(s)",
                    module.ReturnLine, module.ReturnColumn);
            var outputs = new List<string>();
            for (int i = 0; i < module.Returned.Count; i++)
            {
                var (name, type) = Resolve(module.Returned[i]);
                if (name.Length == 0) throw Error(ErrorCodes.MlirBadModule, "return gives a top.None value", module.Returned[i].Line, module.Returned[i].Column);
                if (!type.SameAs(module.ReturnTypes[i]) || !type.SameAs(module.ResultTypes[i]))
                    throw Error(ErrorCodes.MlirTypeMismatch, $"returned {module.Returned[i]} is {type}, but return says {module.ReturnTypes[i]} and @main {module.ResultTypes[i]}",
                        module.Returned[i].Line, module.Returned[i].Column);
                if (outputs.Contains(name)) throw Error(ErrorCodes.MlirBadModule, $"{module.Returned[i]} is returned twice", module.Returned[i].Line, module.Returned[i].Column);
                outputs.Add(name);
            }
            var piece = new Piece(module.Name, kind, -1, null);
            var graph = new PieceGraph(piece, platform, dynamic, _tensorList, inputs.Values.ToList(), outputs, weights, graphConstants, ops);
            return new MlirPieceModule(graph, weightFile);
        }

        private static string Describe(AttrValue v) => v.Kind == AttrValueKind.String ? "\"" + v.String + "\"" : "a " + v.Kind.ToString().ToLowerInvariant();

        /// <summary>Which part of a quantized linear a weight is, from the key suffixes <see cref="WeightKeys"/> gives.</summary>
        private static WeightPart PartOf(string key) =>
            key.EndsWith(".qweight", StringComparison.Ordinal) ? WeightPart.QWeight
            : key.EndsWith(".scales", StringComparison.Ordinal) ? WeightPart.Scales
            : key.EndsWith(".qzeros", StringComparison.Ordinal) ? WeightPart.QZeros
            : key.EndsWith(".input_perm", StringComparison.Ordinal) ? WeightPart.InputPermutation
            : WeightPart.Value;

        private LocSyntax? ResolveLoc(LocSyntax? loc)
        {
            for (int hops = 0; loc?.Alias is { } alias; hops++)
            {
                if (hops > MaxDepth || !module.LocAliases.TryGetValue(alias, out LocSyntax? target))
                    throw Error(hops > MaxDepth ? ErrorCodes.MlirLimit : ErrorCodes.MlirUndefinedValue,
                        hops > MaxDepth ? $"location alias #{alias} refers to itself" : $"location alias #{alias} is not defined after the module", loc.Line, loc.Column);
                loc = target;
            }
            return loc;
        }

        private string? LocName(OpSyntax op)
        {
            LocSyntax? loc = ResolveLoc(op.Loc);
            return loc is { Names.Count: 1 } ? loc.Names[0] : null;
        }

        /// <summary>The op's result tensor names: its location's name(s), or its SSA value's when it has none.</summary>
        private string[] Names(OpSyntax op)
        {
            int count = op.Results.Sum(r => r.Count);
            LocSyntax? loc = ResolveLoc(op.Loc);
            if (loc is not null && loc.Names.Count > 0)
            {
                if (loc.Names.Count != count)
                    throw Error(ErrorCodes.MlirTypeMismatch, $"{op.Name} has {count} result(s) but its location names {loc.Names.Count}", loc.Line, loc.Column);
                return loc.Names.ToArray();
            }
            var names = new List<string>();
            foreach (var (id, n) in op.Results)
                for (int i = 0; i < n; i++) names.Add(n == 1 ? "%" + id : "%" + id + "#" + i.ToString(CultureInfo.InvariantCulture));
            return names.ToArray();
        }

        private void AddTensor(string name, TypeSyntax type, OpSyntax op)
        {
            if (name.Length == 0) throw Error(ErrorCodes.MlirBadModule, $"{op.Name} names a tensor \"\"", op.Line, op.Column);
            var tensor = new GraphTensor(name, type.DType, type.Shape);
            if (!_tensors.TryAdd(name, tensor))
                throw Error(ErrorCodes.MlirBadModule, $"tensor name \"{name}\" is given twice; tensor names (locations) must be unique", op.Line, op.Column);
            _tensorList.Add(tensor);
        }

        private void Define(OpSyntax op, string[]? names)
        {
            int next = 0;
            foreach (var (id, count) in op.Results)
            {
                if (_values.ContainsKey(id) || _args.ContainsKey(id))
                    throw Error(ErrorCodes.MlirUndefinedValue, $"%{id} is defined twice", op.Line, op.Column);
                _values[id] = names?[next..(next + count)];
                next += count;
            }
        }

        private (string Name, TypeSyntax Type) Resolve(ValueUse use)
        {
            if (_args.ContainsKey(use.Id))
                throw Error(ErrorCodes.MlirBadModule, $"argument {use} is used directly; only top.Input may consume @main's arguments", use.Line, use.Column);
            if (!_values.TryGetValue(use.Id, out string[]? names))
                throw Error(ErrorCodes.MlirUndefinedValue, $"{use} is used before it is defined", use.Line, use.Column);
            if (names is null)
            {
                if (use.Index > 0) throw Error(ErrorCodes.MlirUndefinedValue, $"{use}: top.None has one result", use.Line, use.Column);
                return ("", new TypeSyntax(true, GraphDType.F32, []));
            }
            int index = use.Index < 0 ? 0 : use.Index;
            if (index >= names.Length || (use.Index < 0 && names.Length > 1))
                throw Error(ErrorCodes.MlirUndefinedValue, $"{use} does not name one of the {names.Length} result(s) of its op", use.Line, use.Column);
            GraphTensor t = _tensors[names[index]];
            return (t.Name, new TypeSyntax(false, t.DType, t.Shape));
        }

        private OpAttr ToOpAttr(OpSyntax op, string name, AttrValue v)
        {
            switch (v.Kind)
            {
                case AttrValueKind.Bool: return OpAttr.Of(name, v.Bool);
                case AttrValueKind.String: return OpAttr.String(name, v.String!);
                case AttrValueKind.Float: return OpAttr.F64(name, v.Float);
                case AttrValueKind.Integer:
                    return v.Type switch
                    {
                        "i32" => OpAttr.I32(name, (int)v.Integer),
                        "si32" => OpAttr.SI32(name, (int)v.Integer),
                        _ => OpAttr.I64(name, v.Integer),
                    };
                default:
                {
                    var items = v.Items!;
                    // An empty array is an i64 array: the writer's only empty arrays (Slice axes) are.
                    if (items.All(i => i.Kind == AttrValueKind.Integer && i.Type == "i64")) return OpAttr.I64s(name, items.Select(i => i.Integer).ToArray());
                    if (items.All(i => i.Kind == AttrValueKind.Float)) return OpAttr.F64s(name, items.Select(i => i.Float).ToArray());
                    throw Error(ErrorCodes.MlirUnsupportedAttribute,
                        $"{op.Name}'s attribute {name} is an array that is neither all i64 nor all f64", v.Line, v.Column);
                }
            }
        }
    }
}
