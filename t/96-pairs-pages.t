#!/usr/bin/perl

# Paging through 2,500 pairs with mdm_watch_pairs while pairs are added
# and removed between pages, with pages of 100 and of 1000: every pair
# that exists for the whole walk comes exactly once, no pair comes twice,
# a pair removed never comes after its removal, the order is the order
# of the watch UDIDs, next is null on the last page only, and a page of
# 1000 pairs with long fields fits in one answer.  Index members longer
# than 128 bytes are skipped, so every cursor handed out is accepted.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use MIME::Base64 qw(encode_base64url);
use Test::More;

use MdmWatch::Pairs qw(store_pairs remove_pairs get_pairs);
use MdmWatch::Test;

my $t = MdmWatch::Test->new->setup(phone => 0, locations => <<'END');
        location = /pairs {
            mdm_watch_pairs;
        }
END

my $COUNT = 2500;
my $LONG = 'L' x 300;

srand 20261204;

sub watch_udid { sprintf '00008301-%016X', $_[0] }

# pair number $i; $long gives it fields longer than the location shows
sub make_pair {
    my ($i, $long) = @_;
    return {
        watch      => watch_udid($i),
        phone      => sprintf('00008110-%016X', int($i / 5)),
        serial     => sprintf('PG%07d', $i),
        product    => $long ? $LONG : 'Watch7,1',
        os_version => $long ? $LONG : '10.0',
        paired_at  => 1796407200 + $i,
    };
}

sub walk {
    my ($limit, $long) = @_;
    my $what = "pages of $limit";

    $t->redis('FLUSHALL');

    # the pairs are numbered with gaps, so that new ones fall in between
    my %live = map { watch_udid($_ * 4) => 1 } 0 .. $COUNT - 1;
    store_pairs($t, map { make_pair($_ * 4, $long) } 0 .. $COUNT - 1);
    is($t->redis('ZCARD', 'mdm_watch:pairs'), $COUNT,
        "$what: $COUNT pairs are indexed");

    my %start = %live;
    my (%seen, %removed_at, @order, @dups, @late);
    my ($cursor, $page, $next_count, $ok) = (undef, 0, 0, 1);
    my $deadline = time + MdmWatch::Test::slow(120);

    while (time < $deadline) {
        my $query = "limit=$limit"
            . (defined $cursor ? "&cursor=$cursor" : '');
        my ($res, $json) = get_pairs($t, $query);
        $page++;

        if (($res->{status} // 0) != 200 || ref $json ne 'HASH') {
            fail("$what: page $page is answered 200 with JSON");
            diag(MdmWatch::Test::describe($res));
            $ok = 0;
            last;
        }

        my @pairs = @{ $json->{pairs} };
        $ok &&= @pairs <= $limit;

        for my $p (@pairs) {
            my $w = $p->{watch_udid};
            push @dups, $w if $seen{$w}++;
            push @late, $w if exists $removed_at{$w};
            push @order, $w;
        }

        last unless defined $json->{next};
        $next_count++;
        $cursor = $json->{next};

        # between pages: remove pairs behind and ahead of the cursor, and
        # add pairs behind and ahead of it
        my @live = sort keys %live;
        for (1 .. 7) {
            my $w = $live[int rand @live];
            next unless delete $live{$w};
            $removed_at{$w} = $page;
            remove_pairs($t, $w);
        }
        # new watches only: one removed stays removed
        my @new = grep { !$live{ $_->{watch} }
                         && !exists $removed_at{ $_->{watch} } }
            map { make_pair(int(rand($COUNT * 4)) | 1, $long) } 1 .. 5;
        store_pairs($t, @new);
        $live{ $_->{watch} } = 1 for @new;
    }

    ok($ok, "$what: every page holds at most $limit pairs");
    is_deeply(\@dups, [], "$what: no pair comes twice");
    is_deeply(\@late, [], "$what: no pair comes after its removal");

    my @missing = grep { !$seen{$_} && !exists $removed_at{$_} }
        sort keys %start;
    is_deeply(\@missing, [],
        "$what: every pair that stayed through the walk comes");
    is_deeply(\@order, [sort @order],
        "$what: the pairs come in the order of their watch UDIDs");
    is($next_count, $page - 1,
        "$what: next is null on the last page only, after $page pages");
    cmp_ok($page, '>=', int($COUNT / $limit),
        "$what: the walk took at least " . int($COUNT / $limit) . ' pages');

    return \%live;
}

walk(100);

my $live = walk(1000, 1);

# the fields of a page of long values, cut as the location cuts them
my ($res, $json) = get_pairs($t, 'limit=1000');
is($res->{status}, 200, 'a page of 1000 pairs with long fields: 200');
is(scalar @{ $json->{pairs} }, 1000, 'the page holds 1000 pairs');
is(length $json->{pairs}[0]{watch_product}, 128,
    'a field longer than 128 bytes is cut to 128 bytes');
my ($first) = sort keys %$live;
is($json->{pairs}[0]{watch_udid}, $first,
    'the first page starts at the first watch UDID');
like($json->{pairs}[0]{paired_at}, qr/^2026-12-04T\d\d:\d\d:\d\dZ$/,
    'paired_at is RFC 3339 in UTC');

# a cursor the location did not write is still a place in the order
($res, $json) = get_pairs($t, 'limit=1&cursor='
    . encode_base64url(watch_udid(4 * 1000)));
my @after = grep { $_ gt watch_udid(4 * 1000) } sort keys %$live;
is($json->{pairs}[0]{watch_udid}, $after[0],
    'a cursor starts after the watch UDID it names');

# index members longer than a cursor may be, written by another tool,
# are not listed, and every cursor handed out is accepted back
{
    my $what = 'an index with members of 225 bytes';
    $t->redis('FLUSHALL');
    my @short = map { watch_udid($_) } 1, 4;
    my @long = map { watch_udid($_) . ('X' x 200) } 2, 3;
    store_pairs($t, map { { %{ make_pair(0) }, watch => $_ } }
        @short, @long);

    my ($cursor, @listed, @lengths);
    my $ok = 1;
    for my $page (1 .. 5) {
        my ($res, $json) = get_pairs($t, 'limit=1'
            . (defined $cursor ? "&cursor=$cursor" : ''));
        if (($res->{status} // 0) != 200 || ref $json ne 'HASH') {
            diag(MdmWatch::Test::describe($res));
            $ok = 0;
            last;
        }
        push @listed, map { $_->{watch_udid} } @{ $json->{pairs} };
        $cursor = $json->{next};
        last unless defined $cursor;
        push @lengths, length $cursor;
    }
    ok($ok, "$what: every page, with the cursor of the one before, is 200");
    is_deeply(\@listed, \@short, "$what: the short members are listed,"
        . ' the long ones are not');
    is_deeply([grep { $_ > 171 } @lengths], [],
        "$what: no cursor is longer than 128 bytes in base64url");
    ok(!defined $cursor, "$what: the walk ends with next: null");

    my ($res, $json) = get_pairs($t, '');
    is_deeply([map { $_->{watch_udid} } @{ $json->{pairs} }], \@short,
        "$what: a page of 100 lists the short members only");
}

$t->finish;
