using System.Globalization;
using LlmBuild.Core.Diagnostics;

namespace LlmBuild.Core.Tokenization.Templates;

/// <summary>
/// Parses the Jinja subset chat templates use into a tree: for (with else, inline if filter, tuple targets),
/// if/elif/else, set (also on namespace attributes and as a block), macro, break/continue, generation blocks, raw;
/// expressions with Jinja's precedence (filters and tests bind tighter than arithmetic). Anything else is a coded
/// error naming the construct.
/// </summary>
internal sealed class JinjaParser
{
    private static readonly HashSet<string> Unsupported =
        ["extends", "block", "include", "import", "from", "call", "filter", "with", "autoescape", "do", "trans"];

    private readonly List<Chunk> _chunks;
    private readonly int _maxDepth;
    private int _index;
    private int _blockDepth;

    private JinjaParser(List<Chunk> chunks, int maxDepth)
    {
        _chunks = chunks;
        _maxDepth = maxDepth;
    }

    /// <summary>Parses a template whose block tags and expressions nest at most <paramref name="maxDepth"/> deep.</summary>
    public static List<Node> Parse(string source, int maxDepth)
    {
        var parser = new JinjaParser(JinjaLexer.Tokenize(source), maxDepth);
        var body = parser.ParseBody([], out string? end, out int line);
        if (end is not null) throw JinjaLexer.Error(line, $"unexpected '{{% {end} %}}'");
        return body;
    }

    /// <summary>Parses nodes until a statement whose first word is one of <paramref name="terminators"/>.</summary>
    private List<Node> ParseBody(HashSet<string> terminators, out string? terminator, out int line)
    {
        var nodes = new List<Node>();
        while (_index < _chunks.Count)
        {
            var chunk = _chunks[_index++];
            switch (chunk)
            {
                case TextChunk t:
                    nodes.Add(new TextNode(t.Text, t.Line));
                    break;
                case OutputChunk o:
                    {
                        var stream = new TokenStream(o.Tokens, o.Line, _maxDepth);
                        nodes.Add(new OutputNode(stream.ParseExpression(), o.Line));
                        stream.ExpectEnd();
                        break;
                    }
                case StatementChunk s:
                    {
                        if (s.Tokens.Count == 0) throw JinjaLexer.Error(s.Line, "empty '{% %}' tag");
                        string word = s.Tokens[0].Value;
                        if (terminators.Contains(word))
                        {
                            terminator = word;
                            line = s.Line;
                            _index--; // let the caller read the terminator's tokens
                            return nodes;
                        }
                        nodes.Add(ParseStatement(s, word));
                        break;
                    }
            }
        }
        terminator = null;
        line = _chunks.Count > 0 ? _chunks[^1].Line : 1;
        return nodes;
    }

    private StatementChunk Consume() => (StatementChunk)_chunks[_index++];

    private List<Node> ParseBlock(string opener, int openLine, HashSet<string> terminators, out string end, out TokenStream endTag)
    {
        // Blocks nest by recursion: bound it so a template of 20,000 nested ifs is an error, not a stack overflow.
        if (_blockDepth >= _maxDepth || !System.Runtime.CompilerServices.RuntimeHelpers.TryEnsureSufficientExecutionStack())
            throw JinjaParser.DepthError(openLine, $"block tags nest more than {_maxDepth} deep");
        _blockDepth++;
        var body = ParseBody(terminators, out string? t, out _);
        _blockDepth--;
        if (t is null)
            throw JinjaLexer.Error(openLine, $"'{{% {opener} %}}' is never closed (expected one of: {string.Join(", ", terminators)})");
        var chunk = Consume();
        end = t;
        endTag = new TokenStream(chunk.Tokens, chunk.Line, _maxDepth);
        endTag.Next(); // the keyword
        return body;
    }

    private Node ParseStatement(StatementChunk s, string word)
    {
        var stream = new TokenStream(s.Tokens, s.Line, _maxDepth);
        stream.Next();
        switch (word)
        {
            case "if":
                {
                    var branches = new List<(Expr, List<Node>)>();
                    var condition = stream.ParseExpression();
                    stream.ExpectEnd();
                    List<Node>? elseBody = null;
                    while (true)
                    {
                        var body = ParseBlock("if", s.Line, ["elif", "else", "endif"], out string end, out var tag);
                        branches.Add((condition, body));
                        if (end == "elif")
                        {
                            condition = tag.ParseExpression();
                            tag.ExpectEnd();
                            continue;
                        }
                        tag.ExpectEnd();
                        if (end == "else")
                        {
                            elseBody = ParseBlock("if", s.Line, ["endif"], out _, out var endTag);
                            endTag.ExpectEnd();
                        }
                        break;
                    }
                    return new IfNode(branches, elseBody, s.Line);
                }
            case "for":
                {
                    var targets = new List<string>();
                    bool paren = stream.TryOperator("(");
                    do targets.Add(stream.ExpectName()); while (stream.TryOperator(","));
                    if (paren) stream.ExpectOperator(")");
                    stream.ExpectKeyword("in");
                    var iterable = stream.ParseExpression(allowCondition: false);
                    Expr? filter = null;
                    if (stream.TryKeyword("if")) filter = stream.ParseExpression(allowCondition: false);
                    if (stream.TryKeyword("recursive")) throw Unsupport(s.Line, "recursive for loops");
                    stream.ExpectEnd();
                    var body = ParseBlock("for", s.Line, ["else", "endfor"], out string end, out var tag);
                    tag.ExpectEnd();
                    List<Node>? elseBody = null;
                    if (end == "else")
                    {
                        elseBody = ParseBlock("for", s.Line, ["endfor"], out _, out var endTag);
                        endTag.ExpectEnd();
                    }
                    return new ForNode(targets, iterable, filter, body, elseBody, s.Line);
                }
            case "set":
                {
                    Expr target;
                    string first = stream.ExpectName();
                    if (stream.TryOperator("."))
                        target = new AttrExpr(new NameExpr(first, s.Line), stream.ExpectName(), s.Line);
                    else if (stream.Peek.Is(","))
                    {
                        var names = new List<Expr> { new NameExpr(first, s.Line) };
                        while (stream.TryOperator(",")) names.Add(new NameExpr(stream.ExpectName(), s.Line));
                        target = new TupleExpr(names, s.Line);
                    }
                    else target = new NameExpr(first, s.Line);
                    if (stream.TryOperator("="))
                    {
                        var value = stream.ParseTupleOrExpression();
                        stream.ExpectEnd();
                        return new SetNode(target, value, null, s.Line);
                    }
                    if (stream.Peek.Is("|")) throw Unsupport(s.Line, "filters on block set");
                    stream.ExpectEnd();
                    var body = ParseBlock("set", s.Line, ["endset"], out _, out var tag);
                    tag.ExpectEnd();
                    return new SetNode(target, null, body, s.Line);
                }
            case "macro":
                {
                    string name = stream.ExpectName();
                    var parameters = new List<(string, Expr?)>();
                    stream.ExpectOperator("(");
                    if (!stream.TryOperator(")"))
                    {
                        do
                        {
                            string p = stream.ExpectName();
                            Expr? def = stream.TryOperator("=") ? stream.ParseExpression() : null;
                            parameters.Add((p, def));
                        } while (stream.TryOperator(","));
                        stream.ExpectOperator(")");
                    }
                    stream.ExpectEnd();
                    var body = ParseBlock("macro", s.Line, ["endmacro"], out _, out var tag);
                    if (tag.Peek.Kind == TokenKind.Name) tag.Next();
                    tag.ExpectEnd();
                    return new MacroNode(name, parameters, body, s.Line);
                }
            case "generation":
                {
                    // transformers' {% generation %} marks assistant text for masks; for rendering it is transparent.
                    stream.ExpectEnd();
                    var body = ParseBlock("generation", s.Line, ["endgeneration"], out _, out var tag);
                    tag.ExpectEnd();
                    return new IfNode([(new ConstExpr(true, s.Line), body)], null, s.Line);
                }
            case "break":
                stream.ExpectEnd();
                return new BreakNode(s.Line);
            case "continue":
                stream.ExpectEnd();
                return new ContinueNode(s.Line);
            default:
                if (Unsupported.Contains(word)) throw Unsupport(s.Line, $"the '{{% {word} %}}' statement");
                throw JinjaLexer.Error(s.Line, $"unknown statement '{{% {word} %}}'");
        }
    }

    internal static LlmBuildException DepthError(int line, string what) =>
        new(ErrorCodes.TemplateDepthLimit, $"chat template line {line}: {what} (JinjaLimits.MaxDepth); simplify the template.");

    internal static LlmBuildException Unsupport(int line, string what) =>
        new(ErrorCodes.ChatTemplateUnsupported, $"chat template line {line}: {what} is not supported by LlmBuild's Jinja subset.");
}

/// <summary>Expression parsing over one tag's tokens. The interpreter evaluates expressions recursively, so the
/// tree's depth is bounded here: by the parser's own recursion (brackets, unary operators, conditionals) and by the
/// length of left-leaning chains (<c>a + b + c</c>, <c>x|f|g</c>, <c>a.b.c</c>), which add one level per link.</summary>
internal sealed class TokenStream(List<Token> tokens, int line, int maxDepth)
{
    private int _pos;
    private int _depth;

    /// <summary>One level deeper for the rest of the enclosing parse; dispose to come back up.</summary>
    private DepthScope Deeper(int at)
    {
        if (++_depth > maxDepth || !System.Runtime.CompilerServices.RuntimeHelpers.TryEnsureSufficientExecutionStack())
        {
            _depth--;
            throw JinjaParser.DepthError(at, $"an expression nests more than {maxDepth} deep");
        }
        return new DepthScope(this);
    }

    private readonly struct DepthScope(TokenStream stream) : IDisposable
    {
        public void Dispose() => stream._depth--;
    }

    /// <summary>A left-leaning chain grew by one link; the links count towards the depth of the expression.</summary>
    private void Link(ref int links, int at)
    {
        links++;
        if (_depth + links > maxDepth)
            throw JinjaParser.DepthError(at, $"an expression chains more than {maxDepth} operators, filters or attributes");
    }

    public Token Peek => _pos < tokens.Count ? tokens[_pos] : new Token(TokenKind.End, "", line);
    private Token PeekAt(int offset) => _pos + offset < tokens.Count ? tokens[_pos + offset] : new Token(TokenKind.End, "", line);

    public Token Next() => _pos < tokens.Count ? tokens[_pos++] : new Token(TokenKind.End, "", line);

    public void ExpectEnd()
    {
        if (Peek.Kind != TokenKind.End) throw JinjaLexer.Error(Peek.Line, $"unexpected {Peek}");
    }

    public bool TryOperator(string op)
    {
        if (Peek.Kind == TokenKind.Operator && Peek.Value == op) { _pos++; return true; }
        return false;
    }

    public bool TryKeyword(string word)
    {
        if (Peek.Kind == TokenKind.Name && Peek.Value == word) { _pos++; return true; }
        return false;
    }

    public void ExpectOperator(string op)
    {
        if (!TryOperator(op)) throw JinjaLexer.Error(Peek.Line, $"expected '{op}', found {Peek}");
    }

    public void ExpectKeyword(string word)
    {
        if (!TryKeyword(word)) throw JinjaLexer.Error(Peek.Line, $"expected '{word}', found {Peek}");
    }

    public string ExpectName()
    {
        if (Peek.Kind != TokenKind.Name) throw JinjaLexer.Error(Peek.Line, $"expected a name, found {Peek}");
        return Next().Value;
    }

    /// <summary>An expression, or a tuple of them separated by commas (as in <c>set a, b = 1, 2</c>).</summary>
    public Expr ParseTupleOrExpression()
    {
        var first = ParseExpression();
        if (!Peek.Is(",")) return first;
        var items = new List<Expr> { first };
        while (TryOperator(",")) items.Add(ParseExpression());
        return new TupleExpr(items, first.Line);
    }

    public Expr ParseExpression(bool allowCondition = true)
    {
        using var deeper = Deeper(Peek.Line);
        var expr = ParseOr();
        if (!allowCondition) return expr;
        int links = 0;
        while (Peek.Is("if") && Peek.Kind == TokenKind.Name)
        {
            Link(ref links, Peek.Line);
            Next();
            var test = ParseOr();
            Expr? otherwise = TryKeyword("else") ? ParseExpression() : null;
            expr = new CondExpr(test, expr, otherwise, expr.Line);
        }
        return expr;
    }

    private Expr ParseOr()
    {
        var left = ParseAnd();
        int links = 0;
        while (TryKeyword("or"))
        {
            Link(ref links, left.Line);
            left = new BinaryExpr("or", left, ParseAnd(), left.Line);
        }
        return left;
    }

    private Expr ParseAnd()
    {
        var left = ParseNot();
        int links = 0;
        while (TryKeyword("and"))
        {
            Link(ref links, left.Line);
            left = new BinaryExpr("and", left, ParseNot(), left.Line);
        }
        return left;
    }

    private Expr ParseNot()
    {
        if (Peek.Kind == TokenKind.Name && Peek.Value == "not")
        {
            int l = Next().Line;
            using var deeper = Deeper(l);
            return new UnaryExpr("not", ParseNot(), l);
        }
        return ParseCompare();
    }

    private Expr ParseCompare()
    {
        var first = ParseMath1();
        var rest = new List<(string, Expr)>();
        while (true)
        {
            var t = Peek;
            if (t.Kind == TokenKind.Operator && t.Value is "==" or "!=" or "<" or ">" or "<=" or ">=")
            {
                Next();
                rest.Add((t.Value, ParseMath1()));
            }
            else if (t.Kind == TokenKind.Name && t.Value == "in")
            {
                Next();
                rest.Add(("in", ParseMath1()));
            }
            else if (t.Kind == TokenKind.Name && t.Value == "not" && PeekAt(1).Kind == TokenKind.Name && PeekAt(1).Value == "in")
            {
                Next();
                Next();
                rest.Add(("notin", ParseMath1()));
            }
            else break;
        }
        return rest.Count == 0 ? first : new CompareExpr(first, rest, first.Line);
    }

    private Expr ParseMath1()
    {
        var left = ParseConcat();
        int links = 0;
        while (Peek.Kind == TokenKind.Operator && Peek.Value is "+" or "-")
        {
            Link(ref links, Peek.Line);
            string op = Next().Value;
            left = new BinaryExpr(op, left, ParseConcat(), left.Line);
        }
        return left;
    }

    private Expr ParseConcat()
    {
        var left = ParseMath2();
        int links = 0;
        while (TryOperator("~"))
        {
            Link(ref links, left.Line);
            left = new BinaryExpr("~", left, ParseMath2(), left.Line);
        }
        return left;
    }

    private Expr ParseMath2()
    {
        var left = ParsePow();
        int links = 0;
        while (Peek.Kind == TokenKind.Operator && Peek.Value is "*" or "/" or "//" or "%")
        {
            Link(ref links, Peek.Line);
            string op = Next().Value;
            left = new BinaryExpr(op, left, ParsePow(), left.Line);
        }
        return left;
    }

    private Expr ParsePow()
    {
        var left = ParseUnary(true);
        int links = 0;
        while (TryOperator("**"))
        {
            Link(ref links, left.Line);
            left = new BinaryExpr("**", left, ParseUnary(true), left.Line);
        }
        return left;
    }

    private Expr ParseUnary(bool withFilter)
    {
        Expr node;
        if (Peek.Kind == TokenKind.Operator && Peek.Value is "-" or "+")
        {
            var t = Next();
            using var deeper = Deeper(t.Line);
            node = new UnaryExpr(t.Value, ParseUnary(false), t.Line);
        }
        else node = ParsePostfix(ParsePrimary());
        return withFilter ? ParseFilterExpr(node) : node;
    }

    private Expr ParsePrimary()
    {
        var t = Next();
        switch (t.Kind)
        {
            case TokenKind.Name:
                return t.Value switch
                {
                    "true" or "True" => new ConstExpr(true, t.Line),
                    "false" or "False" => new ConstExpr(false, t.Line),
                    "none" or "None" => new ConstExpr(null, t.Line),
                    _ => new NameExpr(t.Value, t.Line),
                };
            case TokenKind.String:
                {
                    string value = t.Value;
                    while (Peek.Kind == TokenKind.String) value += Next().Value; // adjacent literals concatenate
                    return new ConstExpr(value, t.Line);
                }
            case TokenKind.Integer:
                return new ConstExpr(IntegerLiteral(t), t.Line);
            case TokenKind.Float:
                return new ConstExpr(double.Parse(t.Value, CultureInfo.InvariantCulture), t.Line);
            case TokenKind.Operator when t.Value == "(":
                {
                    if (TryOperator(")")) return new TupleExpr([], t.Line);
                    var first = ParseExpression();
                    if (TryOperator(")")) return first;
                    var items = new List<Expr> { first };
                    while (TryOperator(","))
                    {
                        if (Peek.Is(")")) break;
                        items.Add(ParseExpression());
                    }
                    ExpectOperator(")");
                    return new TupleExpr(items, t.Line);
                }
            case TokenKind.Operator when t.Value == "[":
                {
                    var items = new List<Expr>();
                    while (!TryOperator("]"))
                    {
                        if (items.Count > 0) { ExpectOperator(","); if (TryOperator("]")) break; }
                        items.Add(ParseExpression());
                    }
                    return new ListExpr(items, t.Line);
                }
            case TokenKind.Operator when t.Value == "{":
                {
                    var items = new List<(Expr, Expr)>();
                    while (!TryOperator("}"))
                    {
                        if (items.Count > 0) { ExpectOperator(","); if (TryOperator("}")) break; }
                        var key = ParseExpression();
                        ExpectOperator(":");
                        items.Add((key, ParseExpression()));
                    }
                    return new DictExpr(items, t.Line);
                }
            default:
                throw JinjaLexer.Error(t.Line, $"unexpected {t}");
        }
    }

    private static long IntegerLiteral(Token t) =>
        long.TryParse(t.Value, NumberStyles.None, CultureInfo.InvariantCulture, out long value) ? value
            : throw new LlmBuildException(ErrorCodes.TemplateIntegerOverflow,
                $"chat template line {t.Line}: the integer {t.Value} does not fit 64 bits (LlmBuild's templates use 64-bit integers).");

    private Expr ParsePostfix(Expr node)
    {
        int links = 0;
        while (true)
        {
            if (Peek.Is(".") || Peek.Is("[") || Peek.Is("(")) Link(ref links, Peek.Line);
            if (TryOperator("."))
            {
                var t = Next();
                if (t.Kind == TokenKind.Name) node = new AttrExpr(node, t.Value, t.Line);
                else if (t.Kind == TokenKind.Integer) node = new ItemExpr(node, new ConstExpr(IntegerLiteral(t), t.Line), t.Line);
                else throw JinjaLexer.Error(t.Line, $"expected an attribute name after '.', found {t}");
            }
            else if (Peek.Is("[") && Peek.Kind == TokenKind.Operator)
            {
                Next();
                node = ParseSubscript(node);
            }
            else if (Peek.Is("(") && Peek.Kind == TokenKind.Operator)
            {
                Next();
                var (args, kwargs) = ParseArguments();
                node = new CallExpr(node, args, kwargs, node.Line);
            }
            else return node;
        }
    }

    private Expr ParseSubscript(Expr target)
    {
        Expr? start = null, stop = null, step = null;
        bool slice = false;
        if (!Peek.Is(":")) start = ParseExpression();
        if (TryOperator(":"))
        {
            slice = true;
            if (!Peek.Is("]") && !Peek.Is(":")) stop = ParseExpression();
            if (TryOperator(":") && !Peek.Is("]")) step = ParseExpression();
        }
        ExpectOperator("]");
        return slice ? new SliceExpr(target, start, stop, step, target.Line) : new ItemExpr(target, start!, target.Line);
    }

    /// <summary>After '(': positional and keyword arguments up to ')'.</summary>
    private (List<Expr>, List<(string, Expr)>) ParseArguments()
    {
        var args = new List<Expr>();
        var kwargs = new List<(string, Expr)>();
        while (!TryOperator(")"))
        {
            if (args.Count + kwargs.Count > 0) { ExpectOperator(","); if (TryOperator(")")) break; }
            if (Peek.Kind == TokenKind.Operator && Peek.Value is "*" or "**")
                throw JinjaParser.Unsupport(Peek.Line, "*args / **kwargs in calls");
            if (Peek.Kind == TokenKind.Name && PeekAt(1).Is("=") && PeekAt(1).Kind == TokenKind.Operator)
            {
                string name = Next().Value;
                Next();
                kwargs.Add((name, ParseExpression()));
            }
            else args.Add(ParseExpression());
        }
        return (args, kwargs);
    }

    private Expr ParseFilterExpr(Expr node)
    {
        int links = 0;
        while (true)
        {
            if (Peek.Is("|") || Peek.Is("is") || Peek.Is("(")) Link(ref links, Peek.Line);
            if (Peek.Kind == TokenKind.Operator && Peek.Value == "|")
            {
                Next();
                var name = ExpectName();
                while (TryOperator(".")) name += "." + ExpectName();
                var args = new List<Expr>();
                var kwargs = new List<(string, Expr)>();
                if (Peek.Is("(") && Peek.Kind == TokenKind.Operator)
                {
                    Next();
                    (args, kwargs) = ParseArguments();
                }
                node = new FilterExpr(node, name, args, kwargs, node.Line);
            }
            else if (Peek.Kind == TokenKind.Name && Peek.Value == "is")
            {
                Next();
                bool negated = TryKeyword("not");
                string name = ExpectName();
                var args = new List<Expr>();
                if (Peek.Is("(") && Peek.Kind == TokenKind.Operator)
                {
                    Next();
                    var (a, kw) = ParseArguments();
                    if (kw.Count > 0) throw JinjaParser.Unsupport(node.Line, "keyword arguments to tests");
                    args = a;
                }
                else if (Peek.Kind is TokenKind.String or TokenKind.Integer or TokenKind.Float
                         || (Peek.Kind == TokenKind.Name && Peek.Value is not ("and" or "or" or "else" or "if" or "in" or "is" or "not")))
                {
                    // A test with one argument without parentheses: "x is divisibleby 3", "x is sameas false".
                    args.Add(ParsePostfix(ParsePrimary()));
                }
                node = new TestExpr(node, name, args, negated, node.Line);
            }
            else if (Peek.Is("(") && Peek.Kind == TokenKind.Operator)
            {
                Next();
                var (args, kwargs) = ParseArguments();
                node = new CallExpr(node, args, kwargs, node.Line);
            }
            else return node;
        }
    }
}
