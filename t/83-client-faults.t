#!/usr/bin/perl

# Clients that send their bodies badly: one byte at a time, chunked in
# odd sizes and forms, not at all after the first half, or larger than
# client_max_body_size.  What arrives whole is served as usual; what
# does not is refused by nginx (400, 408, 413) before the module acts,
# and Redis is exactly as it was.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use IO::Select;
use IO::Socket::INET;
use Socket qw(IPPROTO_TCP TCP_NODELAY);
use Test::More;
use Time::HiRes qw(sleep time);

use MdmWatch::Message qw(get_token token_update parse_token_data);
use MdmWatch::Test;

my $t = MdmWatch::Test->new->setup(
    http => "    client_body_timeout 1s;\n    client_max_body_size 64k;\n");
my $watch = $t->pki->udid;
my $phone = '00008110-000A1B2C3D4E5F60';
my $mi = $t->machine_info_body(UDID => $watch);
my ($worker) = $t->wait_workers(1);

my $ENROLL = $MdmWatch::Test::ENROLL_URI;
my $CHECKIN = $MdmWatch::Test::CHECKIN_URI;

sub head {
    my ($method, $uri, $type, @more) = @_;
    return "$method $uri HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        . "Content-Type: $type\r\nConnection: close\r\n"
        . join('', map { "$_\r\n" } @more);
}

sub enroll_head { head('POST', $ENROLL, $MdmWatch::Test::CMS_TYPE, @_) }
sub checkin_head { head('PUT', $CHECKIN, $MdmWatch::Test::CHECKIN_TYPE, @_) }

sub live_get_token {
    my $st = $t->challenge(body => $mi) // die 'no challenge';
    return (get_token(udid => $phone, security_token => $st,
        watch_udid => $watch), $st);
}

sub unchanged {
    my ($what, $snapshot, $upstream) = @_;
    $t->redis_unchanged_ok($snapshot, "$what: Redis is unchanged");
    is($t->upstream_count, $upstream, "$what: nothing reached the MDM server");
}

# a connection with Nagle's algorithm off, so that every write is a
# segment of its own and nginx reads the body byte by byte
sub send_bytewise {
    my ($head, $body, $pause) = @_;
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1',
        PeerPort => $t->port, Proto => 'tcp', Timeout => 5)
        or die "connect: $!";
    setsockopt($s, IPPROTO_TCP, TCP_NODELAY, 1) or die "TCP_NODELAY: $!";
    binmode $s;
    my $start = time;

    syswrite $s, $head . 'Content-Length: ' . length($body) . "\r\n\r\n";
    for my $i (0 .. length($body) - 1) {
        syswrite $s, substr($body, $i, 1);
        sleep $pause;
    }
    $s->blocking(0);
    return { sock => $s, start => $start, deadline => $start + 15 };
}

# a body one byte at a time

{
    my $what = 'machine info sent one byte at a time';
    my $res = $t->read_response(send_bytewise(enroll_head(), $mi, 0.0005));
    $t->challenge_ok($res, "$what is challenged");

    my ($body, $st) = live_get_token();
    $what = 'a GetToken sent one byte at a time';
    $res = $t->read_response(send_bytewise(checkin_head(), $body, 0.0005));
    is($res->{status}, 200, "$what is answered 200")
        or diag(MdmWatch::Test::describe($res));
    ok(length(parse_token_data($res->{body}) // ''), "$what: TokenData");
    is($t->redis('EXISTS', "mdm_watch:security_token:$st"), 0,
        "$what: the security token is used up");
}

# clients that stop half-way: nginx's 408 after client_body_timeout
# (1s), which closes the connection without an answer

{
    my $before = () = $t->access_log;
    my ($get_token) = live_get_token();
    my $snapshot = $t->redis_snapshot;
    my $upstream = $t->upstream_count;

    # nginx logs the challenge just after answering it
    my $lines = () = $t->access_log(count => $before + 1);

    my %half = (
        'machine info' => [enroll_head(), $mi],
        'a GetToken'   => [checkin_head(), $get_token],
        'a TokenUpdate to the check-in location' =>
            [checkin_head(), token_update(udid => $watch)],
        'a body to a location without the module' =>
            [head('PUT', '/mdm/server', 'application/octet-stream'),
                'x' x 2000],
        'machine info with none of its body' => [enroll_head(), "\x30" x 900],
    );

    my %pending;
    for my $what (sort keys %half) {
        my ($h, $body) = @{ $half{$what} };
        my $sent = $what =~ /none of/ ? ''
                 : substr($body, 0, length($body) >> 1);
        $pending{$what} = $t->send_raw([$h . 'Content-Length: '
            . length($body) . "\r\n\r\n" . $sent], timeout => 5);
    }

    for my $what (sort keys %pending) {
        my $res = $t->read_response($pending{$what}, 5);
        ok(!defined $res->{status} && ($res->{error} // '') eq 'no answer',
            "$what, stopped half-way: nginx closes the connection without"
            . ' an answer') or diag(MdmWatch::Test::describe($res));
        cmp_ok($res->{elapsed}, '>=', 0.95,
            "$what, stopped half-way: after client_body_timeout");
        cmp_ok($res->{elapsed}, '<', MdmWatch::Test::slow(2.5),
            "$what, stopped half-way: and soon after it");
    }

    my @log = $t->access_log(count => $lines + keys %half);
    is_deeply([sort map { $_->{status} } @log[$lines .. $#log]],
        [(408) x keys %half], 'the access log shows 408 for each');
    is_deeply([grep { $_ ne '-' } map { $_->{action} } @log[$lines .. $#log]],
        [], 'the module acted on none of them');
    unchanged('clients stopped half-way', $snapshot, $upstream);
}

# chunked bodies of odd shapes that arrive whole

# chunks of the given sizes, in turn; hex in the given case, zero-padded
# to the given width, with an extension on every chunk if asked, and a
# trailer field after the last
sub chunked {
    my ($body, %o) = @_;
    my @sizes = @{ $o{sizes} };
    my ($out, $i, $n) = ('', 0, 0);

    while ($i < length $body) {
        my $size = $sizes[$n++ % @sizes];
        my $chunk = substr $body, $i, $size;
        my $hex = sprintf '%0*x', $o{width} // 1, length $chunk;
        $hex = uc $hex if $o{upper};
        $out .= $hex . ($o{ext} ? ';mdm="odd";x=1' : '') . "\r\n$chunk\r\n";
        $i += $size;
    }
    $out .= '0' . ($o{ext} ? ';end' : '') . "\r\n";
    $out .= "X-Trailer: after the body\r\n" if $o{trailer};
    return "$out\r\n";
}

my %odd = (
    'chunks of prime sizes 1, 2, 3, 5 ... 31' =>
        { sizes => [1, 2, 3, 5, 7, 11, 13, 17, 19, 23, 29, 31] },
    'one-byte chunks' => { sizes => [1] },
    'chunks with extensions and a trailer' =>
        { sizes => [97, 3], ext => 1, trailer => 1 },
    'chunk sizes in upper-case hex with leading zeros' =>
        { sizes => [255, 16, 1], upper => 1, width => 8 },
);

for my $how (sort keys %odd) {
    my $res = $t->raw_request(enroll_head('Transfer-Encoding: chunked')
        . "\r\n" . chunked($mi, %{ $odd{$how} }));
    $t->challenge_ok($res, "machine info in $how is challenged");

    my ($body, $st) = live_get_token();
    $res = $t->raw_request(checkin_head('Transfer-Encoding: chunked')
        . "\r\n" . chunked($body, %{ $odd{$how} }));
    is($res->{status}, 200, "a GetToken in $how is answered 200")
        or diag(MdmWatch::Test::describe($res));
    ok(length(parse_token_data($res->{body}) // ''),
        "a GetToken in $how: TokenData");
}

# chunked bodies nginx refuses

{
    my ($get_token) = live_get_token();
    my $half = length($get_token) >> 1;
    my %bad = (
        'a chunk size that is no hex number' =>
            "zz\r\n" . $get_token . "\r\n0\r\n\r\n",
        'a chunk size of 2^72' =>
            "FFFFFFFFFFFFFFFFFF\r\n" . $get_token . "\r\n0\r\n\r\n",
        'a chunk longer than its size' =>
            sprintf("%x\r\n", $half) . $get_token . "\r\n0\r\n\r\n",
        'a negative chunk size' =>
            "-10\r\n" . $get_token . "\r\n0\r\n\r\n",
    );

    for my $how (sort keys %bad) {
        my $snapshot = $t->redis_snapshot;
        my $upstream = $t->upstream_count;
        my $res = $t->raw_request(checkin_head('Transfer-Encoding: chunked')
            . "\r\n" . $bad{$how}, timeout => 5);
        is($res->{status}, 400, "a GetToken with $how is answered 400")
            or diag(MdmWatch::Test::describe($res));
        unchanged("a GetToken with $how", $snapshot, $upstream);

        $res = $t->raw_request(enroll_head('Transfer-Encoding: chunked')
            . "\r\n" . ($bad{$how} =~ s/\Q$get_token\E/$mi/r), timeout => 5);
        is($res->{status}, 400, "machine info with $how is answered 400")
            or diag(MdmWatch::Test::describe($res));
        unchanged("machine info with $how", $snapshot, $upstream);
    }
}

# bodies over client_max_body_size (64k): 413 from nginx

# a client that waits for 100 Continue, and gives up on the body when
# refused: it shuts its side, which ends nginx's lingering close
sub expect_continue {
    my ($length) = @_;
    my $h = $t->send_raw([enroll_head('Expect: 100-continue',
        "Content-Length: $length") . "\r\n"], timeout => 5);
    my $sel = IO::Select->new($h->{sock});
    $sel->can_read(3);
    shutdown $h->{sock}, 1;
    return $t->read_response($h, 5);
}

{
    my ($get_token) = live_get_token();
    my $pad = "\t<key>Padding</key>\n\t<string>" . ('p' x 70_000)
        . "</string>\n";
    (my $big_get_token = $get_token) =~ s{</dict>\n</plist>}
        {$pad</dict>\n</plist>} or die 'no end of dictionary';
    my $big_mi = $t->machine_info_body(UDID => $watch,
        PADDING => 'p' x 70_000);

    my @cases = (
        ['machine info of 70 KB', sub { $t->enroll(body => $big_mi) }],
        ['chunked machine info of 70 KB',
            sub { $t->enroll(body => $big_mi, chunked => 1,
                chunk_size => 7000) }],
        ['machine info announcing 70 KB after Expect: 100-continue',
            sub { expect_continue(70_000) }],
        ['a GetToken of 70 KB', sub { $t->checkin($big_get_token) }],
        ['a chunked GetToken of 70 KB',
            sub { $t->checkin($big_get_token, chunked => 1,
                chunk_size => 4096) }],
        ['a TokenUpdate of 70 KB',
            sub { $t->checkin(token_update(udid => $watch,
                token => 'T' x 70_000)) }],
    );

    for my $case (@cases) {
        my ($what, $send) = @$case;
        my $snapshot = $t->redis_snapshot;
        my $upstream = $t->upstream_count;
        my $res = $send->();
        is($res->{status}, 413, "$what is answered 413")
            or diag(MdmWatch::Test::describe($res));
        unlike($res->{raw}, qr{^HTTP/1\.1 100 }, "$what: no 100 Continue");
        unchanged($what, $snapshot, $upstream);
    }
}

is(join(' ', $t->wait_workers(1)), $worker, 'the worker process is the same');
is(scalar(() = $t->crashes), 0, 'no worker exited on a signal');

$t->finish;
