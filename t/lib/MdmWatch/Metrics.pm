package MdmWatch::Metrics;

# A strict reader of the Prometheus text exposition format, version
# 0.0.4, as the status page writes it: every line is a HELP or TYPE
# comment, or a sample of a family declared before it.

use strict;
use warnings;

use Exporter qw(import);
use Test::More;

our @EXPORT_OK = qw(parse_metrics sample_key status_page);

my $NAME = qr/[a-zA-Z_:][a-zA-Z0-9_:]*/;
my $LABEL = qr/[a-zA-Z_][a-zA-Z0-9_]*/;
my $VALUE = qr/[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?|[-+]?Inf|NaN/;
my $TYPES = qr/counter|gauge|histogram|summary|untyped/;

=head1 NAME

MdmWatch::Metrics - a strict parser of the status page

=head1 FUNCTIONS

=head2 parse_metrics($text)

Returns

    { errors => [ what is wrong, by line ],
      help => { family => text }, type => { family => type },
      samples => [ { name, family, labels => { name => value },
                     value, key } ],
      value => { key => value } }

where C<key> is C<sample_key> of the sample.  An empty C<errors> means
that the text is well-formed: names and labels have the allowed
characters, label values are quoted with their escapes, each family has
one HELP and one TYPE before its samples, counters end in C<_total>,
and each histogram has C<le> buckets in increasing order with
non-decreasing counts, the last one C<+Inf> and equal to C<_count>, and
a C<_sum>.

=head2 sample_key($name, %labels)

C<name{a="x",b="y"}>, labels sorted by name, or the bare name.

=head2 status_page($t, $uri)

GETs the status page of the test's nginx (C<$uri>, C</status> by
default) and returns it parsed; an answer other than 200, or a page that
is not well-formed, fails a test.

=cut

sub status_page {
    my ($t, $uri) = @_;
    my $res = $t->request(uri => $uri // '/status');
    my $m = parse_metrics($res->{body} // '');

    if (($res->{status} // 0) != 200 || @{ $m->{errors} }) {
        fail('the status page is answered and well-formed');
        diag(join "\n", @{ $m->{errors} }, MdmWatch::Test::describe($res));
    }
    return $m;
}

sub sample_key {
    my ($name, %labels) = @_;
    return $name unless %labels;
    return $name . '{'
        . join(',', map { "$_=\"$labels{$_}\"" } sort keys %labels) . '}';
}

sub parse_labels {
    my ($text, $errors, $n) = @_;
    my %labels;
    my $rest = $text;

    while (length $rest) {
        if ($rest !~ s/^($LABEL)="((?:[^"\\\n]|\\[\\"n])*)"//) {
            push @$errors, "line $n: malformed labels {$text}";
            return \%labels;
        }
        my ($k, $v) = ($1, $2);
        $v =~ s/\\(.)/$1 eq 'n' ? "\n" : $1/ge;
        push @$errors, "line $n: label $k twice" if exists $labels{$k};
        $labels{$k} = $v;
        last unless $rest =~ s/^,//;
    }
    push @$errors, "line $n: malformed labels {$text}" if length $rest;
    return \%labels;
}

sub family_of {
    my ($name, $type) = @_;
    return $name if exists $type->{$name} && $type->{$name} ne 'histogram';
    if ($name =~ /^(.*)_(?:bucket|sum|count)$/
        && ($type->{$1} // '') eq 'histogram')
    {
        return $1;
    }
    return undef;
}

sub parse_metrics {
    my ($text) = @_;
    my (%help, %type, @samples, %value, @errors, %seen);
    my $n = 0;

    my $body = $text;
    push @errors, 'the text does not end with a newline'
        unless $body =~ s/\n\z//;

    for my $line (split /\n/, $body, -1) {
        $n++;

        if ($line =~ /^# HELP ($NAME) (.*)$/) {
            push @errors, "line $n: a second HELP of $1" if exists $help{$1};
            $help{$1} = $2;
            next;
        }

        if ($line =~ /^# TYPE ($NAME) ($TYPES)$/) {
            push @errors, "line $n: a second TYPE of $1" if exists $type{$1};
            push @errors, "line $n: the TYPE of $1 after its samples"
                if $seen{$1};
            push @errors, "line $n: the TYPE of $1 before its HELP"
                unless exists $help{$1};
            $type{$1} = $2;
            next;
        }

        if ($line =~ /^($NAME)(?:\{(.*)\})? ($VALUE)$/) {
            my ($name, $labels, $value) = ($1, $2, $3);
            my $l = parse_labels($labels // '', \@errors, $n);
            my $family = family_of($name, \%type);

            if (!defined $family) {
                push @errors, "line $n: $name belongs to no declared family";
                next;
            }
            push @errors, "line $n: the counter $name does not end in _total"
                if $type{$family} eq 'counter' && $name !~ /_total$/;

            my $key = sample_key($name, %$l);
            push @errors, "line $n: $key twice" if exists $value{$key};
            $value{$key} = $value;
            $seen{$family} = 1;
            push @samples, { name => $name, family => $family, labels => $l,
                value => $value, key => $key };
            next;
        }

        push @errors, "line $n: neither a comment nor a sample: $line";
    }

    for my $family (sort keys %help) {
        push @errors, "$family has a HELP but no TYPE"
            unless exists $type{$family};
    }

    for my $family (grep { $type{$_} eq 'histogram' } sort keys %type) {
        push @errors, check_histogram($family, \@samples, \%value);
    }

    return { errors => \@errors, help => \%help, type => \%type,
        samples => \@samples, value => \%value };
}

sub check_histogram {
    my ($family, $samples, $value) = @_;
    my @buckets = grep { $_->{name} eq "${family}_bucket" } @$samples;
    my @errors;

    return "$family has no buckets" unless @buckets;

    my ($le, $count) = (undef, 0);
    for my $b (@buckets) {
        my $bound = $b->{labels}{le};
        if (!defined $bound) {
            push @errors, "$family: a bucket without le";
            next;
        }
        my $num = $bound eq '+Inf' ? 9**9**9 : $bound;
        push @errors, "$family: le=\"$bound\" is not above the bucket before"
            if defined $le && $num <= $le;
        push @errors, "$family: the bucket le=\"$bound\" counts less than"
            . ' the one before' if $b->{value} < $count;
        ($le, $count) = ($num, $b->{value});
    }

    push @errors, "$family: the last bucket is not le=\"+Inf\""
        unless ($buckets[-1]{labels}{le} // '') eq '+Inf';
    push @errors, "$family has no _sum"
        unless exists $value->{"${family}_sum"};

    my $total = $value->{"${family}_count"};
    if (!defined $total) {
        push @errors, "$family has no _count";
    } elsif ($total != $buckets[-1]{value}) {
        push @errors, "$family: _count $total is not the +Inf bucket "
            . $buckets[-1]{value};
    }

    return @errors;
}

1;
