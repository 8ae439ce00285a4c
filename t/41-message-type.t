#!/usr/bin/perl

# $mdm_watch_message_type holds the MessageType of a check-in only when
# it is shaped as Apple's message types are, so that it can go into a
# header to the MDM server: a MessageType carrying line breaks or other
# bytes leaves the variable empty, and the check-in still passes through
# as it was sent.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;

use MdmWatch::Message qw(token_update);
use MdmWatch::Test;

my $t = MdmWatch::Test->new->setup(checkin => ' ' x 12
    . "proxy_set_header X-Message-Type \$mdm_watch_message_type;\n");
my $checkin_type = $MdmWatch::Test::CHECKIN_TYPE;
my $checkin_uri = $MdmWatch::Test::CHECKIN_URI;

sub send_checkin {
    my ($what, $body, $expect) = @_;
    my $before = $t->upstream_count;
    my $snapshot = $t->redis_snapshot;

    my $res = $t->request(method => 'PUT', uri => $checkin_uri,
        headers => [['Content-Type', $checkin_type]], body => $body);
    is($res->{status}, 200, "$what is answered by the MDM server")
        or diag(MdmWatch::Test::describe($res));

    my @up = $t->upstream_requests;
    is(scalar @up, $before + 1, "$what: the MDM server received it once");
    is($up[$before]{body}, $body, "$what: the body is unchanged");
    is($up[$before]{header}{'x-message-type'}, $expect,
        "$what: X-Message-Type is "
        . (defined $expect ? $expect : 'not sent'));
    ok(!exists $up[$before]{header}{'x-injected'},
        "$what: no header comes from the MessageType");
    is($t->upstream_count, $before + 1,
        "$what: no second request reached the MDM server");
    return $snapshot;
}

my $udid = '00008110-0000000000000E01';

for my $case (
    ['a MessageType with a line break and a header after it',
     "Foo&#13;&#10;X-Injected: yes&#13;&#10;Content-Length: 0&#13;&#10;"
     . "&#13;&#10;GET /smuggled HTTP/1.1&#13;&#10;Host: x"],
    ['a MessageType with a space', 'Token Update'],
    ['a MessageType of 65 letters', 'A' x 65],
    ['a MessageType with a byte past ASCII', "Token\xc3\xa9"])
{
    my ($what, $type) = @$case;
    my $body = '<?xml version="1.0" encoding="UTF-8"?>'
        . '<plist version="1.0"><dict>'
        . "<key>MessageType</key><string>$type</string>"
        . "<key>UDID</key><string>$udid</string>"
        . '</dict></plist>';
    my $snapshot = send_checkin($what, $body, undef);
    $t->redis_unchanged_ok($snapshot, "$what: Redis is unchanged");
}

send_checkin('a TokenUpdate', token_update(udid => $udid), 'TokenUpdate');
send_checkin('a MessageType of 64 letters and digits',
    '<?xml version="1.0" encoding="UTF-8"?><plist version="1.0"><dict>'
    . '<key>MessageType</key><string>' . ('Ab1_.' x 12) . 'Abcd</string>'
    . "<key>UDID</key><string>$udid</string></dict></plist>",
    ('Ab1_.' x 12) . 'Abcd');

$t->finish;
